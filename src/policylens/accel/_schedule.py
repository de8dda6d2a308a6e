"""Update-step schedules: uniform, exact DP over contiguous segments, and the Bubbling Union.

A schedule of a branch is the sorted list of denoising steps at which it is recomputed; every
other step reuses the output cached at the latest update step. Step 0 is always an update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def uniform_update_steps(num_steps: int, every: int | None = None, num_updates: int | None = None) -> list[int]:
    """Steps 0, k, 2k, ... (``every=k``) or ``num_updates`` steps spread evenly over ``num_steps``."""
    if (every is None) == (num_updates is None):
        raise ValueError(f"uniform schedule: give exactly one of every={every}, num_updates={num_updates}.")
    if every is not None:
        if every < 1:
            raise ValueError(f"uniform schedule: every={every}; expected >= 1.")
        return list(range(0, num_steps, every))
    if not 1 <= num_updates <= num_steps:
        raise ValueError(f"uniform schedule: num_updates={num_updates}; expected 1..num_steps ({num_steps}).")
    return sorted({int(np.floor(i * num_steps / num_updates)) for i in range(num_updates)})


def segment_scores(sim: np.ndarray) -> np.ndarray:
    """score[a, b] = sum_{t=a..b} sim[a, t] for a <= b (else -inf); sim (K, K) -> (K, K)."""
    K = sim.shape[0]
    csum = np.cumsum(sim, axis=1)  # (K, K): csum[a, b] = sum_{t<=b} sim[a, t]
    before = np.concatenate([np.zeros((K, 1)), csum[:, :-1]], axis=1)  # sum_{t<a}: take diag
    score = csum - np.diag(before)[:, None]
    return np.where(np.triu(np.ones((K, K), dtype=bool)), score, -np.inf)


def optimal_update_steps(sim: np.ndarray, num_updates: int, maximize: bool = True) -> list[int]:
    """Exact DP, O(S·K²): split steps 0..K-1 into ``num_updates`` contiguous segments starting at the
    update steps, maximising (or minimising, ``maximize=False``) the summed segment scores."""
    sim = np.asarray(sim, dtype=np.float64)
    K = sim.shape[0]
    if sim.shape != (K, K):
        raise ValueError(f"similarity matrix has shape {sim.shape}; expected square (K, K).")
    if not 1 <= num_updates <= K:
        raise ValueError(f"num_updates={num_updates}; expected 1..K ({K}).")
    score = segment_scores(sim if maximize else -sim)
    # best[s, b]: best total covering steps 0..b with s+1 segments, the last ending at b.
    best = np.full((num_updates, K), -np.inf)
    arg = np.zeros((num_updates, K), dtype=np.int64)
    best[0] = score[0]
    for s in range(1, num_updates):
        for b in range(s, K):
            a = np.arange(s, b + 1)  # start of the last segment
            cand = best[s - 1, a - 1] + score[a, b]
            j = int(np.argmax(cand))
            best[s, b], arg[s, b] = cand[j], a[j]
    steps, b = [], K - 1
    for s in range(num_updates - 1, 0, -1):
        a = int(arg[s, b])
        steps.append(a)
        b = a - 1
    return [0, *sorted(steps)]


def reuse_error_scores(l1: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Bubbling-Union score of each branch: mean L1 reuse error over all ordered step pairs a != t."""
    out = {}
    for name, m in l1.items():
        m = np.asarray(m, dtype=np.float64)
        K = m.shape[0]
        out[name] = float((m.sum() - np.trace(m)) / max(1, K * (K - 1)))
    return out


def bubbling_union(
    schedules: Mapping[str, Sequence[int]],
    layers: Mapping[str, int],
    kinds: Mapping[str, str],
    scores: Mapping[str, float],
    n_bu: int,
) -> dict[str, list[int]]:
    """For the ``n_bu`` branches with the highest score, add the update steps of every FFN branch in
    the same or a deeper layer, so a recomputed FFN never reads a stale upstream cache."""
    if n_bu < 0:
        raise ValueError(f"n_bu={n_bu}; expected >= 0.")
    out = {k: sorted(set(v)) for k, v in schedules.items()}
    chosen = sorted(scores, key=lambda k: (-scores[k], k))[:n_bu]
    for name in chosen:
        extra: set[int] = set()
        for other, steps in schedules.items():
            if kinds[other] == "ffn" and layers[other] >= layers[name]:
                extra.update(steps)
        out[name] = sorted(set(out[name]) | extra)
    return out


def steps_to_mask(steps: Sequence[int], num_steps: int) -> list[bool]:
    """Static per-step update mask (Python bools: reading it never syncs a device)."""
    mask = [False] * num_steps
    for s in steps:
        if not 0 <= s < num_steps:
            raise ValueError(f"update step {s} outside 0..{num_steps - 1}.")
        mask[s] = True
    if not mask[0]:
        raise ValueError("schedule does not update at step 0; the first step must compute every branch.")
    return mask
