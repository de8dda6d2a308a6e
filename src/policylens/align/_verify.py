"""Check alignment stores (``align extract`` / ``align ingest``): the store's own verify plus layout checks.

Per store: everything :func:`~policylens.store.verify_store` checks (shapes, dtypes, codecs,
checksums, completeness, NaN/Inf), then the ``align`` layout (either version, ``_layout.py``): the
version is known and matches the store kind; the record parses and its grid matches the stored
features; (episode, step) keys are unique and non-negative; non-finite xyz / uv of valid points are
counted. Similarity: the cosine of the mean patch feature of adjacent frames of an episode (and,
for window stores, of adjacent windows), as mean / min; below ``min_cosine`` it is a problem
(default: reported only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..store import KINDS, open_store, verify_store
from ._layout import align_info, as_grid, as_xyz, feature_field, grid_problem
from ._record import PreprocessRecord

__all__ = ["AlignCheck", "find_stores", "verify_align"]


@dataclass
class AlignCheck:
    """One store's outcome: ``ok`` when ``problems`` is empty; ``adjacent_cos`` = (mean, min) or None."""

    path: str
    layout: str = "?"
    rows: int = 0
    shape: str = ""
    dtype: str = ""
    nonfinite: int = 0
    adjacent_cos: tuple[float, float] | None = None
    window_cos: tuple[float, float] | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_stores(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is a store, else the stores directly below it (sorted)."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/manifest.json"))
    if not found:
        raise FileNotFoundError(
            f"{root}: no manifest.json in it or its subfolders; pass an `align` store or their folder"
        )
    return found


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.divide((a * b).sum(-1), den, out=np.ones(len(a)), where=den > 0)


def _stat(c: np.ndarray) -> tuple[float, float] | None:
    return (float(c.mean()), float(c.min())) if len(c) else None


def _features(chk: AlignCheck, store, info: dict, ep: np.ndarray, st: np.ndarray, min_cosine: float | None) -> None:
    rec = PreprocessRecord.from_dict(info["record"])
    field_name = feature_field(info)
    problem = grid_problem(info, store.specs[field_name].shape, rec.grid_size)
    if problem is not None:
        chk.problems.append(problem)
        return
    means = []  # (rows, T, C) mean over patches, streamed in row blocks
    for a in range(0, len(store), 256):
        x = as_grid(store.get_batch(slice(a, a + 256))[field_name].double(), info["window"], rec.grid_size)
        chk.nonfinite += int((~torch.isfinite(x)).sum())
        means.append(x.mean((2, 3)).numpy())  # (b, T, Hf, Wf, C) -> (b, T, C)
    m = np.concatenate(means)  # (rows, T, C)
    order = np.lexsort((st[:, 0], ep[:, 0]))
    m, e = m[order], ep[order, 0]
    same = e[1:] == e[:-1]
    flat = m.reshape(len(m) * m.shape[1], -1)
    frame = _cos(flat[:-1], flat[1:])  # adjacent frames within rows and across adjacent rows
    keep = np.repeat(np.r_[True, same], m.shape[1])[1:]
    chk.adjacent_cos = _stat(frame[keep])
    if info["layout"] == "windows":
        chk.window_cos = _stat(_cos(m.mean(1)[:-1], m.mean(1)[1:])[same])
    for name, s in (("adjacent frames", chk.adjacent_cos), ("adjacent windows", chk.window_cos)):
        if s is not None and min_cosine is not None and s[1] < min_cosine:
            chk.problems.append(f"{name}: min cosine of mean features {s[1]:.3f} < --min-cosine {min_cosine}")


def _points(chk: AlignCheck, store, info: dict) -> None:
    empty = 0
    for a in range(0, len(store), 256):
        b = store.get_batch(slice(a, a + 256))
        xyz, uv, valid = as_xyz(b[feature_field(info)]), b["uv"], b["valid"]  # (b, N, 3), (b, N, 2), (b, N)
        chk.nonfinite += int((~torch.isfinite(xyz[valid])).sum() + (~torch.isfinite(uv[valid])).sum())
        empty += int((valid.sum(1) == 0).sum())
    if empty:
        chk.warnings.append(f"{empty} frames have no valid point")


def verify_align(path: str | os.PathLike, min_cosine: float | None = None) -> AlignCheck:
    """Check one store (see the module docstring)."""
    chk = AlignCheck(str(path))
    rep = verify_store(path)
    chk.problems += rep.problems
    chk.warnings += rep.warnings
    if rep.incomplete or rep.damaged or any("manifest" in p for p in rep.problems):
        return chk
    store = open_store(path)
    spec = store.specs[KINDS[store.kind][0]]
    chk.rows, chk.shape, chk.dtype = len(store), "x".join(map(str, spec.shape)), spec.dtype
    try:
        info = align_info(path)
    except ValueError as exc:
        chk.problems.append(str(exc))
        return chk
    chk.layout = info["layout"]
    if not {"episode", "step"} <= set(store.specs):
        chk.problems.append("no 'episode' / 'step' fields")
        return chk
    keys = open_store(path, fields=["episode", "step"]).get_batch(slice(None))
    ep, st = keys["episode"].numpy(), keys["step"].numpy()  # (rows, T)
    pairs = {tuple(r) for r in np.concatenate([ep, st], 1).tolist()}
    if len(pairs) != len(ep):
        chk.problems.append(f"{len(ep) - len(pairs)} duplicate (episode, step) rows")
    if (ep < 0).any() or (st < 0).any():
        chk.problems.append("negative episode / step indices")
    try:
        if chk.layout == "points":
            _points(chk, store, info)
        else:
            _features(chk, store, info, ep, st, min_cosine)
    except (KeyError, ValueError) as exc:
        chk.problems.append(f"layout {chk.layout!r} does not read back: {exc}")
    return chk
