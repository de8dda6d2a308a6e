"""Layout seeds of both simulators: training episodes and evaluation episodes never share a layout.

Episode ``i`` of a run with seed ``s`` is layout ``s * 100_000 + i`` for training data and
``10**9 + s * 100_000 + i`` for evaluation (``policylens.sim.pybullet`` and ``policylens.sim.metaworld``).
"""

from __future__ import annotations

EVAL_SEED_OFFSET = 10**9


def train_layout_seed(seed: int, i: int) -> int:
    """Layout of training episode ``i`` under run seed ``seed``."""
    return int(seed) * 100_000 + int(i)


def eval_layout_seed(seed: int, i: int) -> int:
    """Layout of evaluation episode ``i``: disjoint from every training layout."""
    return EVAL_SEED_OFFSET + int(seed) * 100_000 + int(i)
