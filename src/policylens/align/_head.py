"""The stage-2 action head: one architecture for every feature source, so sources compare fairly.

``ActionHead(in_dim, cond_dim)`` maps a token set ``(B, N, in_dim)`` with a validity mask and a
condition vector ``(B, cond_dim)`` (normalised proprio + the instruction's multi-hot) to an action
chunk ``(B, horizon, action_dim)``: tokens -> LayerNorm -> linear to ``width``; ``queries`` learned
queries, shifted by an embedding of the condition, attend over the valid tokens (multi-head
cross-attention); the pooled queries and the condition embedding go through an MLP to the chunk.
Only the input projection's width depends on the source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ActionHead", "HeadShape"]


@dataclass(frozen=True)
class HeadShape:
    """Sizes of :class:`ActionHead`."""

    in_dim: int
    cond_dim: int
    width: int = 128
    queries: int = 4
    heads: int = 4
    horizon: int = 8
    action_dim: int = 7

    def __post_init__(self) -> None:
        for name in ("in_dim", "cond_dim", "width", "queries", "heads", "horizon", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeadShape.{name}={getattr(self, name)}; expected >= 1")
        if self.width % self.heads:
            raise ValueError(f"HeadShape.width={self.width} is not divisible by heads={self.heads}")


class ActionHead(nn.Module):
    """Token set + condition -> action chunk (module docstring)."""

    def __init__(self, shape: HeadShape) -> None:
        super().__init__()
        s, self.shape = shape, shape
        self.proj = nn.Sequential(nn.LayerNorm(s.in_dim), nn.Linear(s.in_dim, s.width))
        self.cond = nn.Sequential(nn.Linear(s.cond_dim, s.width), nn.GELU(), nn.Linear(s.width, s.width))
        self.query = nn.Parameter(torch.randn(s.queries, s.width) * 0.02)
        self.attn = nn.MultiheadAttention(s.width, s.heads, batch_first=True)
        self.out = nn.Sequential(
            nn.LayerNorm(s.width * (s.queries + 1)),
            nn.Linear(s.width * (s.queries + 1), 4 * s.width),
            nn.GELU(),
            nn.Linear(4 * s.width, s.horizon * s.action_dim),
        )

    def forward(self, tokens: Tensor, valid: Tensor, cond: Tensor) -> Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.shape.in_dim:
            raise ValueError(f"ActionHead: tokens must be (B, N, {self.shape.in_dim}), got {tuple(tokens.shape)}")
        valid = valid | ~valid.any(1, keepdim=True)  # a frame without valid tokens attends to all (no NaN)
        c = self.cond(cond)  # (B, W)
        q = self.query[None] + c[:, None]  # (B, Q, W)
        kv = self.proj(tokens)
        pooled, _ = self.attn(q, kv, kv, key_padding_mask=~valid, need_weights=False)
        x = torch.cat([pooled.flatten(1), c], -1)
        return self.out(x).view(len(x), self.shape.horizon, self.shape.action_dim)
