"""Extractors for anchor caches: run a policy through the tap core and return per-sample
features (``hidden_feature``, ``hidden_state``, ``token_level``; CRaFT ``bridge`` in ``_bridge``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["policy_extractor"]


def _forward(model: nn.Module) -> Callable[[dict[str, Tensor]], Any]:
    """The forward that computes the prefix hidden states (``run_prefix`` when the policy has one)."""
    run_prefix = getattr(model, "run_prefix", None)
    return run_prefix if run_prefix is not None else (lambda batch: model(**batch))


def policy_extractor(
    model: nn.Module, kind: str, layers: Sequence[int], pooling: str, dtype: str = "float32"
) -> tuple[Callable[[dict[str, Tensor]], dict[str, Tensor]], list[str]]:
    """An extractor for :func:`build_store` that taps ``llm.layers.{layer}.out`` and pools it.

    ``hidden_feature``: ``target_features (B, D)`` from the first layer; ``hidden_state``:
    ``teacher_hidden (B, n_layers, n_vecs, D)`` (n_vecs = 1 when pooled, else every prefix
    token); ``token_level``: ``labels (B, T)``, the argmax of the tied-embedding logits of
    ``llm.norm.out``. Returns the extractor and its tap names. Unpooled hidden states are cast
    to ``dtype`` as they are captured (the same values, half the bytes to move); pooled ones are
    pooled in float32 first.
    """
    from policylens.tap import capture, pool, tap_name

    taps = [tap_name("llm", None, "norm.out")] if kind == "token_level" else [tap_name("llm", i) for i in layers]
    forward = _forward(model)
    cast = dtype if kind == "hidden_state" and pooling == "none" else None

    def run(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        spans = model.token_layout(batch)["prefix"]
        with torch.no_grad(), capture(model, taps, dtype=cast, stop_early=True) as cap:
            forward(batch)
        if kind == "hidden_feature":
            return {"target_features": pool(cap[taps[0]], spans, pooling)}  # (B, D)
        if kind == "hidden_state":
            hs = [pool(cap[t], spans, pooling) for t in taps]  # L x (B, D) or (B, T, D)
            return {"teacher_hidden": torch.stack([h if h.dim() == 3 else h[:, None] for h in hs], 1)}
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        weight = embed.weight if embed is not None else model.paligemma.language_model.embed_tokens.weight
        return {"labels": (cap[taps[0]].float() @ weight.float().T).argmax(-1)}  # (B, T)

    return run, taps
