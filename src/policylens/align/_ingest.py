"""Point clouds into a store, ``points`` fixed points per frame, keyed by (episode, step) like the feature stores.

Sources: PLY files (ASCII or binary; ``x y z``, optional ``red green blue``, ``u v`` pixel column / row
— kept as float, sub-pixel allowed —, ``object_id`` and per-point features ``<prefix>0 .. <prefix>{D-1}``,
e.g. ``feat_0 .. feat_255``), found by a ``pattern`` such as ``clouds/ep{episode}/{step:04d}.ply``;
or depth + calibration of the episodes' ``camera`` (:func:`~policylens.data.pointcloud.backproject`).

Fixed size: a frame with more than ``points`` points keeps a random subset (sorted, drawn from a
generator seeded ``[seed, episode, step]``, so a resumed run draws the same); one with fewer keeps all
and is padded with zeros, ``valid = False``, ``object_id = -1`` and ``uv = -1`` (off the frame, so
``uv_to_grid`` marks the padding invalid too).

Layout (version 2): a ``point_cloud`` store, dtype float32, whose feature field ``xyz [N, 3]`` sits
beside inputs ``rgb [N, 3]`` uint8, ``uv [N, 2]`` float32, ``valid [N]`` bool, ``object_id [N]`` int32,
``episode [1]`` / ``step [1]`` int64 and, with features, ``point_features [N, D]``;
``manifest.meta.extra["align"]`` has ``version``, ``layout="points"`` and the settings. Stores of
layout version 1 (``hidden_state``, xyz as ``teacher_hidden [1, N, 3]``) still read (``_layout.py``).
"""

from __future__ import annotations

import glob
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import EpisodeFormatError
from ..data.pointcloud import backproject, read_ply_vertices
from ..store import StoreMeta, build_store
from ._layout import LAYOUT_VERSION

__all__ = ["depth_cloud", "fix_points", "ingest_depth", "ingest_ply", "ply_files", "read_ply_points"]

FIELDS = ("rgb", "uv", "valid", "object_id", "episode", "step")


def read_ply_points(path: str | os.PathLike, feature_prefix: str = "feat_") -> dict[str, np.ndarray]:
    """``{"xyz" (M, 3) f32, "rgb" (M, 3) u8, "uv" (M, 2) f32 (-1 without u, v), "object_id" (M,) i32,
    "features" (M, D) f32 or absent}`` from a PLY file (the reader of ``data.pointcloud``)."""
    path = Path(path)
    rec = read_ply_vertices(path)
    names = list(rec)
    m, col = len(rec["x"]), lambda keys: np.stack([rec[k] for k in keys], axis=1)
    out = {
        "xyz": col("xyz").astype(np.float32),
        "rgb": col(("red", "green", "blue")).astype(np.uint8) if {"red", "green", "blue"} <= set(names) else None,
        "uv": col("uv").astype(np.float32) if {"u", "v"} <= set(names) else np.full((m, 2), -1, np.float32),
        "object_id": rec["object_id"].astype(np.int32) if "object_id" in names else np.full(m, -1, np.int32),
    }
    if out["rgb"] is None:
        out["rgb"] = np.zeros((m, 3), np.uint8)
    feats = sorted((int(n[len(feature_prefix) :]), n) for n in names if re.fullmatch(rf"{feature_prefix}\d+", n))
    if feats:
        if [i for i, _ in feats] != list(range(len(feats))):
            raise EpisodeFormatError(
                f"{path}: feature properties {[n for _, n in feats][:8]}... are not {feature_prefix}0 .. "
                f"{feature_prefix}{len(feats) - 1}; number them from 0 without gaps"
            )
        out["features"] = col([n for _, n in feats]).astype(np.float32)
    return out


def fix_points(cloud: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``cloud`` (M points) -> exactly ``n`` points plus ``valid``: subsample or pad (module docstring)."""
    m = len(cloud["xyz"])
    keep = np.sort(rng.choice(m, n, replace=False)) if m > n else np.arange(m)
    out = {"valid": np.zeros(n, bool)}
    out["valid"][: len(keep)] = True
    for key, a in cloud.items():
        fill = -1 if key in ("uv", "object_id") else 0
        b = np.full((n, *a.shape[1:]), fill, a.dtype)
        b[: len(keep)] = a[keep]
        out[key] = b
    return out


class _Clouds:
    """Store source: sample ``i`` -> fixed-size point tensors of frame ``keys[i] = (episode, step)``."""

    def __init__(self, keys: list[tuple[int, int]], load, n: int, seed: int) -> None:
        self.keys, self.load, self.n, self.seed = keys, load, n, seed

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        e, t = self.keys[i]
        cloud = fix_points(self.load(e, t), self.n, np.random.default_rng([self.seed, e, t]))
        out = {k: torch.from_numpy(v) for k, v in cloud.items()}
        if "features" in out:
            out["point_features"] = out.pop("features")
        out["episode"], out["step"] = torch.tensor([e]), torch.tensor([t])
        return out


def _xyz(batch: dict) -> dict:
    return {"xyz": batch["xyz"]}  # (B, N, 3)


def _build(out, keys, load, points: int, seed: int, info: dict, dataset_id: str, batch_size: int, progress: bool):
    if points < 1:
        raise ValueError(f"points={points}; expected >= 1 points per frame")
    if not keys:
        raise ValueError(f"no frames to ingest ({info['source']}: {info.get('pattern') or info.get('episodes')})")
    source = _Clouds(keys, load, points, seed)
    inputs = [*FIELDS, *(["point_features"] if "point_features" in source[0] else [])]
    info = {"version": LAYOUT_VERSION, "layout": "points", "points": points, "seed": seed, **info}
    meta = StoreMeta(
        kind="point_cloud", dataset_id=dataset_id, taps=["points.xyz"], dtype="float32", extra={"align": info}
    )
    return build_store(
        out, source, _xyz, meta, batch_size=batch_size, store_inputs=inputs, progress=progress, desc="align ingest"
    )


def ply_files(pattern: str) -> list[tuple[int, int, Path]]:
    """``[(episode, step, path)]`` of the files matching ``pattern`` (``{episode}`` and ``{step}`` fields,
    format specs allowed: ``ep{episode:03d}/{step:04d}.ply``), sorted by (episode, step)."""
    fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    if sorted(fields) != ["episode", "step"]:
        raise ValueError(f"--ply {pattern!r}: the pattern needs the fields {{episode}} and {{step}} once each")
    parts = string.Formatter().parse(pattern)
    regex = "".join(re.escape(lit) + (rf"(?P<{f}>\d+)" if f else "") for lit, f, _, _ in parts)
    found = []
    for p in glob.glob(re.sub(r"\{[^}]*\}", "*", pattern)):
        hit = re.fullmatch(regex, p)
        if hit:
            found.append((int(hit["episode"]), int(hit["step"]), Path(p)))
    if not found:
        raise FileNotFoundError(f"--ply {pattern!r}: no file matches; e.g. clouds/ep{{episode}}/{{step:04d}}.ply")
    return sorted(found)


def ingest_ply(
    pattern: str,
    out: str | os.PathLike,
    *,
    points: int = 1024,
    seed: int = 0,
    feature_prefix: str = "feat_",
    camera: str | None = None,
    frame_size: Sequence[int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Point clouds of the PLY files matching ``pattern`` into the store ``out``. ``camera`` and
    ``frame_size`` (H, W) of the uv pixels are recorded so the dataset can check them against the
    feature stores' records."""
    files = {(e, t): p for e, t, p in ply_files(pattern)}
    dims: dict[int, Path] = {}

    def load(e: int, t: int) -> dict:
        cloud = read_ply_points(files[(e, t)], feature_prefix)
        dims.setdefault(cloud["features"].shape[1] if "features" in cloud else 0, files[(e, t)])
        if len(dims) > 1:
            raise EpisodeFormatError(
                f"{files[(e, t)]}: per-point feature dims differ across files ({dict(dims)}); every PLY of one "
                "store must carry the same feature properties"
            )
        return cloud

    info = {"source": "ply", "pattern": pattern, "camera": camera, "feature_prefix": feature_prefix}
    info["frame_size"] = None if frame_size is None else [int(s) for s in frame_size]
    return _build(out, sorted(files), load, points, seed, info, f"ply:{pattern}", batch_size, progress)


def depth_cloud(episode, camera: str, t: int, stride: int = 1) -> dict[str, np.ndarray]:
    """The back-projected cloud of ``camera`` at step ``t`` (``read_ply_points``' keys, uv as float32)."""
    depth = episode.depth(camera, t)
    if depth is None or camera not in episode.calibration:
        what = "depth" if depth is None else "calibration"
        raise EpisodeFormatError(
            f"episode {episode.path}: camera {camera!r} has no {what}; depth cameras {sorted(episode.depths)}, "
            f"calibrated cameras {sorted(episode.calibration)}. Pick one of both with --camera, or ingest PLY files"
        )
    cal = episode.calibration[camera]
    pc = backproject(
        depth, cal.intrinsics, cal.extrinsics_at(t), episode.frame(camera, t), episode.mask(camera, t), stride
    )
    return {"xyz": pc.xyz, "rgb": pc.rgb, "uv": pc.uv.astype(np.float32), "object_id": pc.object_id}


def ingest_depth(
    episodes,
    out: str | os.PathLike,
    *,
    camera: str,
    points: int = 1024,
    stride: int = 1,
    seed: int = 0,
    dataset_id: str = "unknown",
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Back-projected clouds of ``camera`` for every (episode, step) into the store ``out``."""
    for e, ep in enumerate(episodes):
        if camera not in ep.camera_names:
            raise KeyError(f"--camera {camera!r}: episode {e} ({ep.path}) has no such camera; it has {ep.camera_names}")
    sizes = {tuple(ep.frame(camera, 0).shape[:2]) for ep in episodes if len(ep)}
    info = {"source": "depth", "camera": camera, "stride": stride, "episodes": [str(ep.path) for ep in episodes]}
    info["frame_size"] = list(next(iter(sizes))) if len(sizes) == 1 else None
    keys = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]
    load = lambda e, t: depth_cloud(episodes[e], camera, t, stride)  # noqa: E731
    return _build(out, keys, load, points, seed, info, dataset_id, batch_size, progress)
