"""The Wilson score interval of a success rate and ``EvalResult``, shared by both simulators'
evaluations and the attention statistics (kept free of heavy imports: no pybullet, no mujoco)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["EvalResult", "wilson_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n <= 0:
        return (0.0, 1.0)
    phat = successes / n
    denom = 1 + z**2 / n
    centre = (phat + z**2 / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EvalResult:
    """Success rate of n rollouts with its Wilson 95% interval and per-episode outcomes."""

    successes: int
    n: int
    episode_success: list[bool] = field(default_factory=list)
    episode_length: list[int] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"success {self.success_rate:.1%} ({self.successes}/{self.n}), 95% CI [{lo:.1%}, {hi:.1%}]"
