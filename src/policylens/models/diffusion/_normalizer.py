"""Per-dimension min-max normaliser to [-1, 1], stored as buffers so it travels with the weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MinMaxNormalizer(nn.Module):
    """``x_n = x * scale + offset`` maps [min, max] to [-1, 1]; constant dimensions map to 0."""

    def __init__(self, dim: int, range_eps: float = 1e-4) -> None:
        super().__init__()
        self.range_eps = range_eps
        self.register_buffer("scale", torch.ones(dim))  # (D,)
        self.register_buffer("offset", torch.zeros(dim))  # (D,)

    @torch.no_grad()
    def fit(self, data: Tensor) -> MinMaxNormalizer:
        """Fit to ``data`` (..., D)."""
        flat = data.reshape(-1, data.shape[-1]).to(torch.float32)  # (N, D)
        lo, hi = flat.min(dim=0).values, flat.max(dim=0).values
        span = hi - lo
        const = span < self.range_eps
        scale = torch.where(const, torch.ones_like(span), 2.0 / span.clamp_min(self.range_eps))
        offset = torch.where(const, -lo, -1.0 - lo * scale)
        self.scale.copy_(scale)
        self.offset.copy_(offset)
        return self

    def normalize(self, x: Tensor) -> Tensor:
        return x * self.scale + self.offset

    def unnormalize(self, x: Tensor) -> Tensor:
        return (x - self.offset) / self.scale
