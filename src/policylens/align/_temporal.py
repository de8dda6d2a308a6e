"""Pool a window of frames into one: (B, T, N, C) -> (B, N, C), each patch over its own T frames.

- ``mean``: the average over valid frames.
- ``attention``: a learned query ``q`` (C,) scores each frame, ``a_t = softmax_t(q·K x_t / √C)``.
- ``gated``: gated attention (Ilse et al., 2018), ``a_t = softmax_t(w·(tanh(V x_t) ⊙ σ(U x_t)))``.

Both attention modes return ``Σ_t a_t x_t``: values are the input features themselves, so the output
stays in the encoder's space (the thing being aligned), and at initialisation (``q = 0``, ``w = 0``)
the weights are uniform, so training starts from the mean. ``valid`` (B, T) bool masks padded
frames; every row needs at least one valid frame.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TEMPORAL_POOLS", "TemporalPool"]

TEMPORAL_POOLS = ("mean", "attention", "gated")


class TemporalPool(nn.Module):
    """``TemporalPool(dim, mode)``; ``hidden`` is the width of the gated-attention branches."""

    def __init__(self, dim: int, mode: str = "mean", hidden: int = 64) -> None:
        super().__init__()
        if mode not in TEMPORAL_POOLS:
            raise ValueError(f"TemporalPool: mode={mode!r}; use one of {list(TEMPORAL_POOLS)}")
        self.dim, self.mode = dim, mode
        if mode == "attention":
            self.query = nn.Parameter(torch.zeros(dim))
            self.key = nn.Linear(dim, dim, bias=False)
        elif mode == "gated":
            self.v, self.u = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
            self.w = nn.Linear(hidden, 1, bias=False)
            nn.init.zeros_(self.w.weight)

    def weights(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Frame weights (B, T, N), summing to 1 over T."""
        if self.mode == "mean":
            scores = torch.zeros(x.shape[:3], device=x.device)
        elif self.mode == "attention":
            scores = (self.key(x) @ self.query.to(x.dtype)).float() / math.sqrt(self.dim)  # (B, T, N)
        else:
            scores = self.w(torch.tanh(self.v(x)) * torch.sigmoid(self.u(x))).squeeze(-1).float()
        if valid is not None:
            scores = scores.masked_fill(~valid[:, :, None], float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"TemporalPool: x has shape {tuple(x.shape)}; expected (B, T, N, {self.dim})")
        if valid is not None:
            if valid.shape != x.shape[:2] or valid.dtype != torch.bool:
                raise ValueError(f"TemporalPool: valid {tuple(valid.shape)} {valid.dtype}; expected bool (B, T)")
            if not bool(valid.any(1).all()):
                raise ValueError("TemporalPool: a row of valid has no True frame; drop that sample or keep a frame")
        a = self.weights(x, valid)  # (B, T, N)
        return (a.to(x.dtype)[..., None] * x).sum(1)  # (B, N, C)
