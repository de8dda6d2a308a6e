"""Experience replay by fraction: each global batch of B rows holds ``round(F·B)`` rows drawn uniformly
from the replay episodes' samples and the rest from the task's, shuffled (``train_vla`` and
``retain.policy_train`` alike)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["check_replay", "check_replay_fraction", "mixed_rows", "replay_rows"]


def replay_rows(fraction: float, batch_size: int) -> int:
    """Rows of each global batch drawn from the replay episodes: ``round(fraction · batch_size)``."""
    return round(fraction * batch_size)


def check_replay_fraction(fraction: float, batch_size: int, owner: str = "config") -> None:
    """Refuse a fraction outside [0, 1) and one that rounds to no row of ``batch_size`` (the configs
    check it when made); ``owner`` names the config in the message."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{owner}.replay_fraction={fraction}; use 0 <= F < 1")
    if fraction > 0 and replay_rows(fraction, batch_size) == 0:
        raise ValueError(f"{owner}.replay_fraction={fraction} of batch_size={batch_size} is 0 rows; raise either")


def check_replay(fraction: float, batch_size: int, replay: Sequence, owner: str = "config") -> None:
    """:func:`check_replay_fraction`, then refuse a fraction without replay episodes and replay
    episodes without a fraction."""
    check_replay_fraction(fraction, batch_size, owner)
    if fraction > 0 and not replay:
        raise ValueError(f"{owner}.replay_fraction={fraction} needs replay episodes (--replay-dataset / --replay-task)")
    if replay and fraction == 0:
        raise ValueError("replay episodes were given with replay_fraction=0; pass a fraction > 0 or mix them in")


def mixed_rows(rng: np.random.Generator, n_task: int, n_replay: int, batch_size: int, replay_rows: int) -> np.ndarray:
    """One global batch: ``batch_size - replay_rows`` indices into the task samples (``0 … n_task-1``) and
    ``replay_rows`` into the replay samples (``n_task …``), shuffled."""
    rows = rng.integers(0, n_task, batch_size - replay_rows)
    if replay_rows:
        rows = np.concatenate([rows, n_task + rng.integers(0, n_replay, replay_rows)])
    return rows[rng.permutation(batch_size)]
