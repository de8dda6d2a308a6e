"""Patch features of episode frames into a feature store, one store per encoder, resumable.

Layout (version 2): a ``patch_grid`` store whose ``patch_features`` row is ``[T, Hf, Wf, C]`` — the
patch grids of the row's ``T`` frames, row-major — plus ``episode [T]`` and ``step [T]`` (int64)
giving the episode index (order of ``open_episodes(spec)``) and step of each of the row's frames.
``manifest.meta.extra["align"]`` says how to read it back (``version``, ``layout``, ``grid``,
``window``, the encoder's :class:`PreprocessRecord` as JSON, ``camera``, ``episodes``):

- ``layout="frames"`` (``T = 1``): single-image encoders, one row per (episode, step).
- ``layout="windows"``: encoders whose features depend on the frame set (VGGT-like; they set
  ``window = T`` and their ``features`` takes ``(B, T, 3, h, w)`` -> ``(B, T, Hf, Wf, C)``). One row per
  window of ``T`` consecutive steps, starts ``0, stride, 2*stride, ...`` plus a last window ending at
  the episode's last step so every step is covered; an episode shorter than ``T`` repeats its last
  step, and ``step`` names each slot's step, so every frame maps back to an exact step.
  Read a row back as ``[W=1, T, Hf, Wf, C]`` with :func:`grid_of`.

Stores of layout version 1 (``hidden_state``, ``teacher_hidden [1, T*Hf*Wf, C]``, the same bytes)
still read: ``_layout.py`` holds both.

Resume: rerun the same call; the store skips finished chunks. Random-weight encoders (no
``source``) are built from :data:`TINY` with ``seed`` so a rerun gives the same weights (the
weights hash is checked by the store).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..runs import weights_hash
from ..store import StoreMeta, build_store
from ._encoders import PatchEncoder, create_encoder, list_encoders
from ._layout import LAYOUT_VERSION, align_info, as_grid, feature_field
from ._record import PreprocessRecord

__all__ = ["TINY", "build_encoder", "extract_features", "frame_windows", "grid_of"]

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_IMAGE = {"image_size": 56, "patch_size": 14}
_HF = {"dinov2": "Dinov2", "dinov3": "DINOv3ViT", "siglip": "SiglipVision"}
_ADAPTER_KEYS = ("size", "fit", "prefix_tokens")


def build_encoder(name: str, source: str | os.PathLike | None = None, seed: int = 0) -> tuple[PatchEncoder, str]:
    """``(encoder, model_id)`` for ``name``. ``source``: a local HF model directory (``from_pretrained``,
    offline), or a ``.json`` file of config fields (plus adapter options ``size`` / ``fit``); ``None``:
    a tiny random-weight model (:data:`TINY`, 56 px, patch 14) seeded with ``seed``. Registered encoders
    without an HF class (``_HF``) are built with ``create_encoder(name, None)``."""
    if name not in list_encoders():
        raise KeyError(f"--encoder {name!r} is unknown; registered: {list_encoders()}")
    if name not in _HF:
        return create_encoder(name, None), f"{name}:registered"
    import transformers

    prefix = _HF[name]
    if not hasattr(transformers, f"{prefix}Model"):
        raise ImportError(f"--encoder {name}: transformers {transformers.__version__} has no {prefix}Model; upgrade it")
    model_cls, config_cls = getattr(transformers, f"{prefix}Model"), getattr(transformers, f"{prefix}Config")
    options, path = {}, None if source is None else Path(source)
    if path is not None and path.is_dir():
        model = model_cls.from_pretrained(path, local_files_only=True)
        return create_encoder(name, model.eval()), str(path)
    fields = {**TINY, **TINY_IMAGE}
    if path is not None:
        if path.suffix != ".json" or not path.is_file():
            raise FileNotFoundError(
                f"--encoder {name}={source}: not a model directory nor an existing .json config file; pass "
                f"{name}=DIR (a saved HF model) or {name}=CONFIG.json (config fields, random weights)"
            )
        fields = json.loads(path.read_text())
        options = {k: fields.pop(k) for k in _ADAPTER_KEYS if k in fields}
    torch.manual_seed(seed)
    model = model_cls(config_cls(**fields)).eval()
    model_id = f"random:{name}:{path or 'tiny'}:seed={seed}"
    return create_encoder(name, model, **options), model_id


def frame_windows(lengths: Sequence[int], window: int = 1, stride: int | None = None) -> list[tuple[int, list[int]]]:
    """``[(episode, steps)]``: windows of ``window`` steps per episode (see the module docstring)."""
    if window < 1 or (stride is not None and stride < 1):
        raise ValueError(f"frame_windows: window={window}, stride={stride}; expected both >= 1")
    stride = stride or window
    out = []
    for e, n in enumerate(lengths):
        if n < 1:
            continue
        if n <= window:
            out.append((e, [min(t, n - 1) for t in range(window)]))
            continue
        starts = list(range(0, n - window + 1, stride))
        if starts[-1] != n - window:
            starts.append(n - window)
        out += [(e, list(range(s, s + window))) for s in starts]
    return out


def grid_of(store) -> torch.Tensor:
    """All rows of an extracted store (either layout version) as ``(rows, T, Hf, Wf, C)`` float tensors
    (small stores; tests, tools)."""
    info = align_info(store.root)
    x = store.get_batch(slice(None))[feature_field(info)].float()  # (rows, T, Hf, Wf, C) or (rows, 1, T*Hf*Wf, C)
    return as_grid(x, info["window"], info["grid"])


def _check_episodes(episodes, camera: str) -> tuple[int, int]:
    sizes = {}
    for e, ep in enumerate(episodes):
        if camera not in ep.camera_names:
            raise KeyError(
                f"--camera {camera!r}: episode {e} ({ep.path}) has no such camera; it has {list(ep.camera_names)}"
            )
        if len(ep):
            sizes.setdefault(tuple(ep.frame(camera, 0).shape[:2]), e)
    if len(sizes) != 1:
        raise ValueError(
            f"--camera {camera!r}: frame sizes (H, W) -> first episode {sizes} differ across episodes or there are "
            "no frames; one store holds one preprocessing record: extract each size separately"
        )
    return next(iter(sizes))


class _Windows:
    """Store source: sample ``i`` = ``{"episode": (T,), "step": (T,)}`` int64."""

    def __init__(self, windows: list[tuple[int, list[int]]]) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        e, steps = self.windows[i]
        return {"episode": torch.full((len(steps),), e, dtype=torch.int64), "step": torch.tensor(steps)}


def _extractor(encoder: PatchEncoder, episodes, camera: str, window: int, record: PreprocessRecord):
    def run(batch: dict) -> dict:
        ep, st = batch["episode"], batch["step"]  # (B, T)
        b = len(ep)
        pairs = zip(ep.flatten().tolist(), st.flatten().tolist(), strict=True)
        frames = np.stack([episodes[e].frame(camera, t) for e, t in pairs])  # (B*T, H, W, 3)
        pixels, rec = encoder.preprocess(frames)  # (B*T, 3, h, w)
        if rec != record:
            raise ValueError(
                f"episode {ep[0, 0].item()} camera {camera!r}: frames give record {rec.to_dict()} but the store was "
                f"made with {record.to_dict()}; extract frames of another size into a separate --out"
            )
        if getattr(encoder, "window", None):
            feats = encoder.features(pixels.reshape(b, window, *pixels.shape[1:]))  # (B, T, Hf, Wf, C)
        else:
            feats = encoder.features(pixels)  # (B*T, Hf, Wf, C)
        return {"patch_features": feats.reshape(b, window, *feats.shape[-3:])}  # (B, T, Hf, Wf, C)

    return run


def extract_features(
    episodes,
    encoder: PatchEncoder,
    out: str | os.PathLike,
    *,
    camera: str,
    stride: int | None = None,
    dtype: str = "float16",
    batch_size: int = 16,
    model_id: str = "unknown",
    dataset_id: str = "unknown",
    progress: bool = True,
) -> dict:
    """Write ``encoder``'s patch features of ``camera``'s frames of every episode into the store ``out``
    (layout: module docstring); returns the manifest. ``stride``: window starts (window encoders only)."""
    window = int(getattr(encoder, "window", None) or 1)
    if window == 1 and stride not in (None, 1):
        raise ValueError(
            f"stride={stride}: {encoder.name} is a single-image encoder (one row per frame); drop --stride"
        )
    size = _check_episodes(episodes, camera)
    record = encoder.record(size)
    windows = frame_windows([len(ep) for ep in episodes], window, stride)
    info = {
        "version": LAYOUT_VERSION,
        "layout": "windows" if window > 1 else "frames",
        "encoder": encoder.name,
        "camera": camera,
        "grid": list(record.grid_size),
        "window": window,
        "stride": (stride or window) if window > 1 else 1,
        "record": record.to_dict(),
        "episodes": [str(ep.path) for ep in episodes],
    }
    model = getattr(encoder, "model", None)
    meta = StoreMeta(
        kind="patch_grid",
        model_id=model_id,
        weights_hash=weights_hash(model) if isinstance(model, torch.nn.Module) else "",
        dataset_id=dataset_id,
        taps=[f"{encoder.name}.patch_tokens"],
        pooling="none",
        dtype=dtype,
        extra={"align": info},
    )
    extractor = _extractor(encoder, episodes, camera, window, record)
    inputs = ("episode", "step")
    return build_store(
        out,
        _Windows(windows),
        extractor,
        meta,
        batch_size=batch_size,
        store_inputs=inputs,
        progress=progress,
        desc=f"align extract {encoder.name}",
    )
