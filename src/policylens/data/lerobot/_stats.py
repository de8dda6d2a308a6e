"""Feature statistics for LeRobot ``meta/stats.json`` and the per-episode ``stats/<feature>/<stat>`` columns.

Same semantics as lerobot 0.4.4 (``lerobot/datasets/compute_stats.py``):

- Per episode: ``min``, ``max``, ``mean``, ``std`` (population), ``count`` and the quantiles ``q01``, ``q10``,
  ``q50``, ``q90``, ``q99``, per dimension. Quantiles are exact, numpy's ``method="inverted_cdf"`` (the smallest
  value with at least q * n values at or below it): the quantity lerobot estimates from a 5000-bin histogram.
- Images: per channel on [0, 1], every stat shaped (3, 1, 1); a one-channel mask counts as three equal channels
  (lerobot loads images as RGB). Computed on lerobot's deterministic frame subsample (evenly spaced: all frames
  up to 100, else ``T ** 0.75`` of them, at least 100 and at most 10 000; frames of 300 px or more strided to
  about 150 px); ``count`` is the number of frames sampled. The stats come from a 256-bin histogram of the uint8
  values per channel: exact, in constant memory. (lerobot 0.4.4 squares uint8 pixels, which wraps, so its image
  ``std`` is too small, usually 0; this one is the true std.)
- Depth maps (``kind="depth"``): as LeRobot does for features flagged ``is_depth_map``: one channel, stats
  shaped (1, 1, 1), in the stored unit (uint16 millimetres here, invalid zeros included), not scaled to [0, 1];
  same frame subsample and striding as images, exact values.
- Dataset (``stats.json``): lerobot's ``aggregate_stats`` over the episodes: min of the mins, max of the maxes,
  count-weighted mean, pooled std, and each quantile the count-weighted mean of the episodes' quantiles (not a
  quantile of the pooled data). lerobot's ``delete_episodes`` / ``split_dataset`` rebuild ``stats.json`` the same
  way from the per-episode columns.

Memory: one episode's values at a time (the writer holds the episode anyway), then O(dims) per feature.
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def sample_frames(n: int) -> np.ndarray:
    """Indices of the frames lerobot samples from an ``n``-frame episode for image stats."""
    k = n if n < 100 else max(100, min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, k)).astype(int)


def episode_stats(x: np.ndarray, image: bool = False, depth: bool = False) -> dict[str, np.ndarray]:
    """Stats of one episode: ``x`` is (T,) or (T, D) values, (T, H, W[, C]) uint8 frames if ``image``, or
    (T, H, W) depth maps if ``depth``."""
    x = np.asarray(x)
    if depth:
        return _depth_stats(x)
    if image:
        return _image_stats(x)
    x = x.reshape(len(x), -1)
    q = np.quantile(x, list(QUANTILES.values()), axis=0, method="inverted_cdf").astype(np.float64)
    out = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0, dtype=np.float64),
        "std": x.std(0, dtype=np.float64),
        "count": np.array([len(x)]),
    }
    return out | dict(zip(QUANTILES, q, strict=True))


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    if frames.dtype != np.uint8:
        raise ValueError(f"image stats need uint8 frames, got {frames.dtype}")
    x = frames[sample_frames(len(frames))]
    if max(x.shape[1:3]) >= 300:
        step = int(max(x.shape[1:3]) / 150)
        x = x[:, ::step, ::step]
    x = x.reshape(*x.shape[:3], -1)  # (N, H, W, C); a mask (N, H, W) gets C = 1
    hist = np.stack([np.bincount(x[..., c].ravel(), minlength=256) for c in range(x.shape[-1])])
    hist = np.repeat(hist, 3, 0) if len(hist) == 1 else hist  # (3, 256) counts
    v = np.arange(256) / 255.0
    n = hist.sum(1)
    mean = hist @ v / n
    std = np.sqrt((hist * (v - mean[:, None]) ** 2).sum(1) / n)
    cum = hist.cumsum(1)
    out = {
        "min": v[(hist > 0).argmax(1)],
        "max": v[255 - (hist[:, ::-1] > 0).argmax(1)],
        "mean": mean,
        "std": std,
        **{k: v[[np.searchsorted(cum[c], q * n[c]) for c in range(3)]] for k, q in QUANTILES.items()},
    }
    return {k: a.reshape(3, 1, 1) for k, a in out.items()} | {"count": np.array([len(x)])}


def _depth_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    x = frames[sample_frames(len(frames))]
    if max(x.shape[1:3]) >= 300:
        step = int(max(x.shape[1:3]) / 150)
        x = x[:, ::step, ::step]
    v = x.reshape(-1).astype(np.float64)
    out = {"min": v.min(), "max": v.max(), "mean": v.mean(), "std": v.std()}
    out |= {k: np.quantile(v, q, method="inverted_cdf") for k, q in QUANTILES.items()}
    return {k: np.reshape(a, (1, 1, 1)) for k, a in out.items()} | {"count": np.array([len(x)])}


def _merge(a: dict, b: dict) -> dict:
    """lerobot's ``aggregate_stats`` of two stats dicts."""
    na, nb = a["count"][0], b["count"][0]
    n = na + nb
    mean = (na * a["mean"] + nb * b["mean"]) / n
    var = (na * (a["std"] ** 2 + (a["mean"] - mean) ** 2) + nb * (b["std"] ** 2 + (b["mean"] - mean) ** 2)) / n
    out = {
        "min": np.minimum(a["min"], b["min"]),
        "max": np.maximum(a["max"], b["max"]),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([n]),
    }
    return out | {k: (na * a[k] + nb * b[k]) / n for k in QUANTILES}


def _to_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: v.tolist() for k, v in stats.items()}


class RunningStats:
    """Dataset stats of one feature, folded episode by episode as lerobot does (see the module docstring)."""

    def __init__(self, image: bool = False, depth: bool = False) -> None:
        self.image, self.depth = image, depth
        self.total: dict[str, np.ndarray] | None = None

    def update(self, x: np.ndarray) -> dict[str, list]:
        """Add one episode's values (as for ``episode_stats``); return that episode's stats as JSON lists."""
        ep = episode_stats(x, self.image, self.depth)
        self.total = ep if self.total is None else _merge(self.total, ep)
        return _to_json(ep)

    def to_json(self) -> dict[str, list]:
        """The dataset stats, as ``meta/stats.json`` holds them."""
        return _to_json(self.total)
