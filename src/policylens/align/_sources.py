"""Stage-2 inputs: what one action head sees of a frame, for each compared feature source.

:class:`FeatureSource` turns a camera frame (and, for ``points``, its depth and calibration) into a
token set ``(B, N, D)`` with a validity mask, through frozen stage-1 / stage-3 models:

- ``rgb``: the stage-1 model's fused tokens of every encoder's patch grid (aligned to the points);
- ``points``: the stage-1 point side over the frame's back-projected cloud (needs depth);
- ``student``: the stage-3 RGB-only student's tokens (one encoder, no points);
- ``raw``: the encoders' own patch features, concatenated (unaligned; the control);
- ``blind``: one constant token — the head sees the proprio state and the instruction only (the
  floor a feature source has to rise above).

The encoders are rebuilt from the ``align extract`` stores the stage-1 model was trained on
(:func:`encoder_from_store`; the store's weights hash is checked), so a rollout encodes frames
exactly as the stores did. The split into :meth:`FeatureSource.inputs` (encoder features and a
fixed-size cloud: what is cached for training) and :meth:`FeatureSource.tokens` (the frozen
models: run per batch) keeps training caches small.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.pointcloud import backproject
from ..runs import weights_hash
from ..sim.pybullet import COLOURS, SHAPES
from ..store import read_manifest
from ._dataset import _align_info
from ._extract import build_encoder
from ._ingest import fix_points
from ._student import load_student, load_student_meta
from ._train import AlignModel, _grid, load_aligned

__all__ = ["SOURCES", "FeatureSource", "encoder_from_store", "instruction_code"]

SOURCES = ("rgb", "points", "student", "raw", "blind")
WORDS = (*COLOURS, *SHAPES)


def instruction_code(instruction: str) -> np.ndarray:
    """Multi-hot (len(WORDS),) of the colour and shape words in ``instruction``: the head's language input."""
    words = set(instruction.lower().replace(",", " ").split())
    return np.array([w in words for w in WORDS], dtype=np.float32)


def encoder_from_store(path: str | os.PathLike):
    """The encoder an ``align extract`` store was written with, rebuilt from its manifest
    (``model_id``), its weights hash checked against the store's."""
    meta = read_manifest(path)["meta"]
    info, model_id = _align_info(path), str(meta.get("model_id", ""))
    name = info.get("encoder")
    if model_id.startswith("random:"):  # random:{name}:{config or 'tiny'}:seed={seed}
        body, _, seed = model_id.rpartition(":seed=")
        source = body.split(":", 2)[2]
        encoder, _ = build_encoder(name, None if source == "tiny" else source, seed=int(seed))
    elif model_id and Path(model_id).is_dir():
        encoder, _ = build_encoder(name, model_id)
    else:
        raise ValueError(
            f"store {str(path)!r}: cannot rebuild its encoder from model_id {model_id!r}; it needs a tiny random "
            "encoder or a local model directory that still exists (re-extract with --encoder NAME=DIR)"
        )
    model = getattr(encoder, "model", None)
    got = weights_hash(model) if isinstance(model, torch.nn.Module) else ""
    if meta.get("weights_hash") and got != meta["weights_hash"]:
        raise ValueError(
            f"store {str(path)!r}: the rebuilt {name} encoder's weights hash {got[:19]}... differs from the store's "
            f"{meta['weights_hash'][:19]}...; the model at {model_id!r} changed since `align extract`"
        )
    return encoder


class FeatureSource:
    """Frames -> ``(tokens (B, N, D), valid (B, N))`` for ``kind`` in :data:`SOURCES` (module docstring)."""

    def __init__(
        self, kind: str, aligned: str | os.PathLike, student: str | os.PathLike | None = None, device="cpu"
    ) -> None:
        if kind not in SOURCES:
            raise ValueError(f"source={kind!r}; use one of {list(SOURCES)}")
        if kind == "student" and student is None:
            raise ValueError("source='student' needs student= (the --out of `policylens align distill`)")
        self.kind, self.device = kind, torch.device(device)
        self.aligned: AlignModel = load_aligned(aligned, self.device)
        meta = self.aligned.meta
        self.point_info = _align_info(meta["points"])
        if kind == "points" and (meta["point_dim"] or self.point_info.get("source") != "depth"):
            raise ValueError(
                f"source='points': the stage-1 model at {str(aligned)!r} was trained on "
                f"{self.point_info.get('source')!r} clouds{' with per-point features' if meta['point_dim'] else ''}; "
                "a rollout can only rebuild clouds from depth (train stage 1 on an `align ingest --episodes` store)"
            )
        stores = {"student": load_student_meta(student)["features"]} if kind == "student" else meta["features"]
        if kind == "blind":
            stores = dict(list(meta["features"].items())[:1])  # camera and frame size only
        self.encoders = {k: encoder_from_store(p) for k, p in stores.items()}
        infos = {k: _align_info(p) for k, p in stores.items()}
        self.camera = next(iter(infos.values()))["camera"]
        self.frame_size = tuple(next(iter(infos.values()))["record"]["frame_size"])
        self.student = load_student(student, self.device) if kind == "student" else None

    @property
    def needs_depth(self) -> bool:
        return self.kind == "points"

    @torch.no_grad()
    def inputs(self, frames: np.ndarray, clouds: list[dict] | None = None) -> dict[str, Tensor]:
        """What is cached per frame: each encoder's patch grid ``(B, Hf, Wf, C)`` float16, or the fixed-size
        clouds (``xyz``, ``rgb``, ``valid``) for ``points``."""
        if self.kind == "points":
            if clouds is None:
                raise ValueError("source='points' needs clouds (FeatureSource.cloud of each frame's depth)")
            return {k: torch.from_numpy(np.stack([c[k] for c in clouds])) for k in ("xyz", "rgb", "valid")}
        if self.kind == "blind":
            return {"blind": torch.zeros(len(frames), 1, dtype=torch.float16)}
        out = {}
        for name, enc in self.encoders.items():
            pixels, _ = enc.preprocess(np.ascontiguousarray(frames))
            out[name] = enc.features(pixels.to(self.device)).half().cpu()
        return out

    def cloud(self, depth, rgb, intrinsics, cam_to_world, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A frame's back-projected cloud, fixed to the point store's size as `align ingest` does."""
        stride = int(self.point_info.get("stride", 1))
        pc = backproject(depth, intrinsics, cam_to_world, rgb, None, stride)
        return fix_points({"xyz": pc.xyz.astype(np.float32), "rgb": pc.rgb}, int(self.point_info["points"]), rng)

    @torch.no_grad()
    def tokens(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Cached inputs of B frames -> ``(tokens (B, N, D) float32, valid (B, N) bool)``."""
        dev, model = self.device, self.aligned
        if self.kind == "points":
            batch = {k: inputs[k][:, None].to(dev) for k in ("xyz", "rgb", "valid")}
            valid = batch["valid"][:, 0].bool()
            return model.point_side(batch, dev).float(), valid
        if self.kind == "blind":
            tokens = inputs["blind"].to(dev).float()[:, :, None]  # (B, 1, 1) zeros
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=dev)
        grids = {k: v[:, None].to(dev) for k, v in inputs.items()}  # (B, T=1, Hf, Wf, C)
        if self.kind == "rgb":
            tokens = model.fuse({"features": grids}).tokens
        elif self.kind == "student":
            tokens = self.student.head(_grid(grids["student"], model.grid))
        else:
            tokens = torch.cat([_grid(grids[k], model.grid) for k in model.names], -1)
        tokens = tokens.float()
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=dev)

    def token_dim(self) -> int:
        if self.kind == "blind":
            return 1
        if self.kind == "points":
            return self.aligned.cfg.dim
        if self.kind == "student":
            return int(self.student.head[-1].out_features)
        if self.kind == "raw":
            return sum(int(d) for d in self.aligned.meta["in_dims"])
        return self.aligned.cfg.dim
