"""Statistics across episodes: bootstrap intervals, paired comparisons, Holm, Markdown tables.

Frames of one episode are not independent (one scene, one instruction, neighbouring
timesteps), so the unit of resampling is the episode: each episode is first reduced to the
mean of its per-frame values, and every interval and test here resamples or permutes those
per-episode values. An episode with 1,000 frames weighs the same as one with 10.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._intervals import wilson_interval as _wilson
from ._overlap import _array

__all__ = [
    "BootstrapCI",
    "PairedDiff",
    "bootstrap_ci",
    "episode_counts",
    "holm",
    "paired_bootstrap_diff",
    "summary_table",
    "wilson_interval",
]

Stat = Callable[[np.ndarray], Any]


class BootstrapCI(NamedTuple):
    """``stat`` over per-episode values with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float


class PairedDiff(NamedTuple):
    """``stat(a) - stat(b)`` over the same episodes, its bootstrap interval and a two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float


def _episodes(values: Any, name: str) -> list[np.ndarray]:
    """Per-episode 1-D float arrays from a list of arrays/scalars, a 1-D array of per-episode
    scalars, or a 2-D (episodes, frames) array."""
    if isinstance(values, np.ndarray) or hasattr(values, "detach"):
        arr = _array(values).astype(np.float64)
        if arr.ndim not in (1, 2):
            raise ValueError(f"{name} as an array must be (episodes,) or (episodes, frames), got shape {arr.shape}")
        eps = [np.atleast_1d(row) for row in arr]
    else:
        eps = [np.atleast_1d(_array(v).astype(np.float64)).ravel() for v in values]
    if len(eps) < 2:
        raise ValueError(f"{name} has {len(eps)} episode(s); an interval over episodes needs at least 2")
    for i, e in enumerate(eps):
        if e.size == 0 or not np.isfinite(e).all():
            raise ValueError(
                f"{name}[{i}] must hold at least one finite frame value, got {e.size} values "
                f"({int((~np.isfinite(e)).sum())} non-finite); drop NaN frames (e.g. iou_otsu of a constant map) first"
            )
    return eps


def _means(values: Any, name: str) -> np.ndarray:
    return np.array([e.mean() for e in _episodes(values, name)])  # (episodes,)


def episode_counts(values: Any) -> tuple[int, int]:
    """(number of episodes, total number of frames) of per-episode values, for ``summary_table``."""
    eps = _episodes(values, "values")
    return len(eps), sum(e.size for e in eps)


def _check(n_boot: int, ci: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 bootstrap resamples, got {n_boot}; 2000 is usual")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be a coverage in (0, 1), got {ci}; e.g. 0.95")


def _quantiles(boots: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Any,
    stat: Stat = np.mean,
    n_boot: int = 2000,
    ci: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> BootstrapCI:
    """``stat`` over episodes with a percentile bootstrap interval that resamples episodes.

    ``values``: a list of per-episode arrays of per-frame values (or of per-episode scalars),
    a 1-D array of per-episode scalars, or a 2-D (episodes, frames) array. Each episode
    becomes the mean of its frames, e (n_episodes,); the estimate is ``stat(e)``; each of
    ``n_boot`` resamples draws n_episodes episodes with replacement. Returns (estimate, low, high).
    """
    _check(n_boot, ci)
    e = _means(values, "values")
    idx = np.random.default_rng(rng).integers(0, e.size, size=(n_boot, e.size))  # (n_boot, episodes)
    boots = np.array([stat(e[i]) for i in idx], dtype=np.float64)
    return BootstrapCI(float(stat(e)), *_quantiles(boots, ci))


def paired_bootstrap_diff(
    a_per_episode: Any,
    b_per_episode: Any,
    stat: Stat = np.mean,
    n_boot: int = 2000,
    ci: float = 0.95,
    n_perm: int = 10000,
    rng: np.random.Generator | int | None = None,
) -> PairedDiff:
    """Compare conditions a and b measured on the same episodes (same order, frame counts may differ).

    Each episode is reduced to its frame mean in a and in b; diff = stat(a) − stat(b). The
    interval resamples episodes with replacement, keeping each episode's (a, b) pair together.
    The p-value is NOT read off the bootstrap distribution: it is a two-sided paired
    sign-flip permutation test (under H0 a and b are exchangeable within an episode, so each
    episode's pair is swapped at random): p = share of swaps with |diff*| >= |diff|. All
    2**n swaps are enumerated when 2**n <= ``n_perm`` (exact p); otherwise ``n_perm`` random
    swaps give p = (1 + count) / (1 + n_perm). Returns (diff, low, high, p_value).
    """
    _check(n_boot, ci)
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1 permutations, got {n_perm}; 10000 is usual")
    a, b = _means(a_per_episode, "a_per_episode"), _means(b_per_episode, "b_per_episode")
    if a.size != b.size:
        raise ValueError(
            f"a_per_episode has {a.size} episodes but b_per_episode has {b.size}; a paired comparison needs "
            "the same episodes in the same order (use bootstrap_ci on each for unpaired data)"
        )
    rng = np.random.default_rng(rng)
    diff = float(stat(a) - stat(b))
    idx = rng.integers(0, a.size, size=(n_boot, a.size))  # (n_boot, episodes)
    boots = np.array([stat(a[i]) - stat(b[i]) for i in idx], dtype=np.float64)
    exact = 2**a.size <= n_perm
    if exact:
        flips = np.array(list(itertools.product((False, True), repeat=a.size)))  # (2**n, episodes)
    else:
        flips = rng.random((n_perm, a.size)) < 0.5
    null = np.array([stat(np.where(f, b, a)) - stat(np.where(f, a, b)) for f in flips], dtype=np.float64)
    count = int((np.abs(null) >= abs(diff) - 1e-12 * max(1.0, abs(diff))).sum())  # tolerance for rounding ties
    p = count / len(flips) if exact else (count + 1) / (n_perm + 1)
    return PairedDiff(diff, *_quantiles(boots, ci), float(p))


def holm(p_values: Any) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, (m,) in the input order.

    With p sorted ascending, adj_(i) = max_{j <= i} min(1, (m − j + 1) p_(j)) (1-based): monotone
    in p and capped at 1. Reject H_i at level α when adj_i <= α.
    """
    p = _array(p_values).astype(np.float64)
    if p.ndim != 1 or p.size == 0 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_values must be a non-empty 1-D list of probabilities in [0, 1], got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m,) multipliers m, m-1, ..., 1
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a success rate (95% by default): ``successes`` of ``n`` rollouts.

    Checks the counts, then calls the house's one implementation
    (``policylens._intervals``, also behind ``policylens.sim.pybullet.wilson_interval``).
    ``n = 0`` gives (0.0, 1.0).
    """
    if int(n) != n or int(successes) != successes or not 0 <= successes <= n:
        raise ValueError(f"successes and n must be integers with 0 <= successes <= n, got successes={successes}, n={n}")
    if not z > 0:
        raise ValueError(f"z must be a positive normal quantile, got {z}; 1.959964 gives 95%")
    return _wilson(int(successes), int(n), z)


def _places(digits: int, *values: float) -> int:
    """Decimals for one cell: ``digits``, or more when every value is below 10^(1-digits) in size (at
    least two significant digits of the largest), so 0.0015 [0.0011, 0.0019] never shows as 0.002."""
    m = max((abs(float(v)) for v in values if np.isfinite(v)), default=0.0)
    return digits if m == 0 or m >= 10.0 ** (1 - digits) else int(-np.floor(np.log10(m))) + 1


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "—"
    if isinstance(v, PairedDiff):
        d = _places(digits, v.diff, v.low, v.high)
        return f"{v.diff:+.{d}f} [{v.low:+.{d}f}, {v.high:+.{d}f}], p={v.p_value:.{digits}g}"
    if isinstance(v, BootstrapCI):
        d = _places(digits, v.estimate, v.low, v.high)
        return f"{v.estimate:.{d}f} [{v.low:.{d}f}, {v.high:.{d}f}]"
    if isinstance(v, float | np.floating):
        return f"{v:.{_places(digits, v)}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def summary_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """A Markdown table with one line per row and, always, its n: ``n episodes`` and ``n frames``.

    Each row is a mapping that must hold ``n_episodes`` and ``n_frames`` (see
    :func:`episode_counts`); its other keys become columns in first-seen order (a key a row
    lacks shows "—"). ``BootstrapCI`` renders as "est [low, high]", ``PairedDiff`` as
    "+diff [low, high], p=…", floats with ``digits`` decimals (more in a cell whose values are all
    below 10^(1-digits) in size: two significant digits of its largest).
    """
    if not rows:
        raise ValueError("rows is empty; pass at least one mapping with n_episodes, n_frames and the metrics")
    cols: list[str] = []
    for i, row in enumerate(rows):
        for key in ("n_episodes", "n_frames"):
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                raise ValueError(
                    f"rows[{i}][{key!r}] must be a non-negative int (every row states its n), got {v!r}; "
                    "use episode_counts(values)"
                )
        cols += [k for k in row if k not in ("n_episodes", "n_frames") and k not in cols]
    header = [*cols, "n episodes", "n frames"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(cols) + ["---:", "---:"]) + "|"]
    for row in rows:
        cells = [_cell(row.get(c), digits) for c in cols] + [str(int(row["n_episodes"])), str(int(row["n_frames"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
