"""Tiny deterministic source and extractors shared by the store tests and their subprocesses."""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from policylens.runs import weights_hash
from policylens.store import StoreMeta, build_store

D, L, V, S = 8, 3, 4, 6  # width, layers, vectors per layer, sequence length


class TinySource:
    """``n`` samples; sample ``i`` is a fixed function of ``i`` (pixel_values, input_ids, attention_mask)."""

    def __init__(self, n: int = 37) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 + i)
        return {
            "pixel_values": torch.randn(3, 4, 4, generator=g),
            "input_ids": torch.randint(0, 50, (S,), generator=g),
            "attention_mask": torch.arange(S) < (S - i % 3),
        }


class TinyModel(nn.Module):
    """Stack of ``L`` linear layers over the flattened image; hidden state ``(B, V, D)`` per layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(48, V * D)
        self.layers = nn.ModuleList(nn.Linear(D, D) for _ in range(L))
        self.head = nn.Linear(D, 50)

    def hidden(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        h = self.inp(pixel_values.flatten(1)).view(-1, V, D)  # (B, V, D)
        out = []
        for layer in self.layers:
            h = torch.tanh(layer(h))
            out.append(h)
        return out  # L x (B, V, D)


def extractor(model: TinyModel, kind: str, delay: float = 0.0):
    """The extractor a build uses for ``kind`` (``delay`` seconds per batch to make kills land mid-run)."""

    @torch.no_grad()
    def run(batch: dict) -> dict[str, torch.Tensor]:
        if delay:
            time.sleep(delay)
        hs = model.hidden(batch["pixel_values"])
        if kind == "hidden_feature":
            return {"target_features": hs[-2].mean(1)}  # (B, D)
        if kind == "hidden_state":
            return {"teacher_hidden": torch.stack(hs, 1)}  # (B, L, V, D)
        return {"labels": model.head(hs[-1]).argmax(-1).repeat(1, 2)[:, :S]}  # (B, S) int64

    return run


def meta_for(kind: str, dtype: str, model: TinyModel) -> StoreMeta:
    taps = [f"layers.{i}.out" for i in range(L)] if kind == "hidden_state" else [f"layers.{L - 2}.out"]
    layers = list(range(L)) if kind == "hidden_state" else [-2]
    return StoreMeta(
        kind=kind,
        model_id="tiny",
        weights_hash=weights_hash(model),
        dataset_id="tiny:37",
        taps=taps,
        layers=layers,
        pooling="mean" if kind == "hidden_feature" else "none",
        dtype=dtype,
    )


def flip(path, offset: int = 16, n: int = 8) -> None:
    """Invert ``n`` bytes of a file in place from ``offset`` (what a bad disk or a stray write does)."""
    b = bytearray(path.read_bytes())
    b[offset : offset + n] = bytes(x ^ 0xFF for x in b[offset : offset + n])
    path.write_bytes(bytes(b))


def build(root, kind="hidden_feature", dtype="float16", n=37, delay=0.0, **kw):
    model = TinyModel()
    kw.setdefault("batch_size", 5)
    kw.setdefault("chunk_rows", 8)
    kw.setdefault("progress", False)
    return build_store(root, TinySource(n), extractor(model, kind, delay), meta_for(kind, dtype, model), **kw)


if __name__ == "__main__":  # python _store_fixtures.py ROOT KIND DTYPE DELAY  (rank from env)
    build(sys.argv[1], sys.argv[2], sys.argv[3], delay=float(sys.argv[4]), store_inputs=["pixel_values"])
