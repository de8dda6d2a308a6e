"""Value statistics of one stored field, streamed chunk by chunk in constant memory (for ``verify``).

NaN/Inf counts, mean / std / min / max, duplicate sample ids for the index field, and for the
feature field the cosine similarity of neighbouring samples and the fraction of identical
neighbours (all identical means the build wrote one batch over and over).
"""

from __future__ import annotations

import numpy as np
import torch

from ._schema import FieldSpec


def _as_float(a: np.ndarray, logical: str) -> np.ndarray:
    if logical == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).float().numpy()
    return a.astype(np.float64)


class FieldStats:
    """Streamed per field, chunk by chunk (constant memory): NaN/Inf, moments, neighbour similarity,
    duplicate sample ids. Chunks must be added in order; a skipped (damaged) chunk breaks the
    neighbour chain there."""

    def __init__(self, name: str, spec: FieldSpec, neighbours: bool) -> None:
        self.name, self.spec, self.neighbours = name, spec, neighbours
        self.ids: list[np.ndarray] = []
        self.count = self.n_bad = self.n_pairs = self.n_same = 0
        self.total = self.total_sq = self.cos_sum = 0.0
        self.lo, self.hi, self.bad_rows, self.prev = np.inf, -np.inf, [], None

    def add(self, start: int, a: np.ndarray) -> None:
        if self.spec.role == "index":
            self.ids.append(a)
            return
        x = _as_float(a.astype(np.float64) if self.spec.dtype == "bool" else a, self.spec.dtype).reshape(len(a), -1)
        bad = ~np.isfinite(x)
        if bad.any():
            self.n_bad += int(bad.sum())
            self.bad_rows += (start + np.flatnonzero(bad.any(axis=1))).tolist()
        x = np.where(bad, 0.0, x)
        self.count, self.total, self.total_sq = self.count + x.size, self.total + x.sum(), self.total_sq + (x * x).sum()
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if self.neighbours:
            y = x if self.prev is None or self.prev[0] != start else np.concatenate([self.prev[1], x])
            u, v = y[:-1], y[1:]
            denom = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
            cos = np.divide((u * v).sum(1), denom, out=np.ones(len(u)), where=denom > 0)
            self.n_pairs, self.cos_sum = self.n_pairs + len(u), self.cos_sum + cos.sum()
            self.n_same += int((u == v).all(axis=1).sum())
            self.prev = (start + len(a), x[-1:])

    def finish(self, problems: list[str], warnings: list[str]) -> dict[str, float] | None:
        """Append what is wrong to ``problems`` / ``warnings``; return the statistics (``None`` if none)."""
        name = self.name
        if self.spec.role == "index":
            ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
            dup = len(ids) - len(np.unique(ids))
            if dup:
                problems.append(f"field {name!r}: {dup} duplicate sample ids (overlapping writes?)")
            return None
        if not self.count:
            return None
        if self.n_bad:
            problems.append(f"field {name!r}: {self.n_bad} NaN/Inf values in samples {self.bad_rows[:10]}")
        mean = float(self.total) / self.count
        std = float(np.sqrt(max(float(self.total_sq) / self.count - mean * mean, 0.0)))
        st = {"mean": mean, "std": std, "min": self.lo, "max": self.hi}
        if self.n_pairs:
            same = self.n_same / self.n_pairs
            st.update(neighbour_cosine_mean=float(self.cos_sum / self.n_pairs), neighbour_identical_frac=same)
            if same == 1.0:
                problems.append(f"field {name!r}: every sample equals its neighbour (one batch written repeatedly?)")
            elif same > 0.5:
                warnings.append(f"field {name!r}: {same:.0%} of neighbouring samples are identical")
        return st
