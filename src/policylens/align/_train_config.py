"""Settings of the alignment training loops: :class:`AlignTrainConfig` (stage 1) and
:class:`DistillConfig` (stage 3) share the loop settings of :class:`LoopConfig`, its checks and
what it records in ``run.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ._fusion import FUSION_MODES

__all__ = ["AMP_MODES", "LOOP_ONLY", "OBJECTIVES", "AlignTrainConfig", "DistillConfig", "LoopConfig"]

OBJECTIVES = ("infonce", "spatial_forcing")
AMP_MODES = ("none", "bf16", "fp16")
# loop settings a rerun may change without making it another run
LOOP_ONLY = ("steps", "eval_every", "save_every", "device", "num_workers", "progress")


@dataclass
class LoopConfig:
    """Optimiser and loop settings both stages share."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    amp: str = "none"
    device: str = "cpu"
    eval_every: int = 100
    save_every: int = 200
    num_workers: int = 0
    progress: bool = True

    def _choices(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("amp", AMP_MODES),)

    def __post_init__(self) -> None:
        for name, choices in self._choices():
            if getattr(self, name) not in choices:
                raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r}; use one of {list(choices)}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and f.name not in ("seed", "num_workers") and v < 1:
                raise ValueError(f"{type(self).__name__}.{f.name}={v}; expected >= 1")

    def settings(self) -> dict:
        """What defines the run (recorded in run.json): everything but the loop settings ``LOOP_ONLY``."""
        return {k: v for k, v in asdict(self).items() if k not in LOOP_ONLY}


@dataclass
class AlignTrainConfig(LoopConfig):
    """Stage-1 settings. ``max_rows``: points per step (a seeded subset when a batch has more);
    ``eval_rows``: cap on training rows for the ridge fit; the rest as named."""

    objective: str = "infonce"
    dim: int = 128
    fusion: str = "softmax"
    top_k: int = 1
    balance_weight: float = 0.01
    temperature: float = 0.07
    window: int = 1
    max_rows: int = 4096
    eval_rows: int = 20000
    held_out: float = 0.2

    def _choices(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("objective", OBJECTIVES), ("fusion", FUSION_MODES), *super()._choices())


@dataclass
class DistillConfig(LoopConfig):
    """Stage-3 settings: student ``hidden`` width, Distiller ``l1_weight``; the rest as in stage 1."""

    hidden: int = 256
    l1_weight: float = 1.0
