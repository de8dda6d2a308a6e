"""Running feature statistics for LeRobot ``meta/stats.json`` (min, max, mean, std, count).

Vectors give per-dimension stats; images give per-channel stats on [0, 1] with shape (3, 1, 1),
as LeRobot stores them.
"""

from __future__ import annotations

import numpy as np


class RunningStats:
    """Accumulate sums over batches of rows (N, D) or images (N, H, W, C) uint8."""

    def __init__(self, image: bool = False) -> None:
        self.image = image
        self.n = 0
        self.sum = self.sq = self.min = self.max = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if self.image:
            x = x.reshape(-1, x.shape[-1]) / 255.0  # (N*H*W, C)
        s, q, lo, hi = x.sum(0), (x**2).sum(0), x.min(0), x.max(0)
        if self.sum is None:
            self.sum, self.sq, self.min, self.max = s, q, lo, hi
        else:
            self.sum, self.sq = self.sum + s, self.sq + q
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)
        self.n += len(x)

    def to_json(self) -> dict:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean**2, 0.0))
        out = {"min": self.min, "max": self.max, "mean": mean, "std": std}
        if self.image:
            out = {k: v.reshape(-1, 1, 1) for k, v in out.items()}
        res = {k: v.tolist() for k, v in out.items()}
        res["count"] = [int(self.n)]
        return res
