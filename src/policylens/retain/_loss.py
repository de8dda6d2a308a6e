"""The retention loss: distance between the student's bridge features and the cached teacher's,
in float32 whatever the cache or autocast dtype."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RETENTION_LOSSES", "retention_loss"]

RETENTION_LOSSES = ("mse", "cosine")


def retention_loss(student: Tensor, target: Tensor, kind: str = "mse") -> Tensor:
    """``mse``: mean squared difference over samples and features; ``cosine``: mean of
    ``1 − cos(student, target)`` over samples. Both 0 when the features are equal."""
    if kind not in RETENTION_LOSSES:
        raise ValueError(f"retention_loss: kind={kind!r}; use one of {list(RETENTION_LOSSES)}")
    if student.shape != target.shape:
        raise ValueError(
            f"retention_loss: student features {tuple(student.shape)} vs cached {tuple(target.shape)}; "
            "the cache must come from a teacher with the student's widths"
        )
    s, t = student.float(), target.to(student.device).float()
    if kind == "mse":
        return torch.mean((s - t) ** 2)
    return torch.mean(1.0 - torch.nn.functional.cosine_similarity(s, t, dim=-1))
