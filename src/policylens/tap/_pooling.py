"""Pooling over token spans: one vocabulary (:data:`POOLINGS`) for every job that pools.

Modes: ``mean_image_tokens`` (mean over every camera's image tokens), ``masked_mean``
(mean over a given span, default the valid tokens), ``first`` / ``last`` (first / last
*valid* token: correct under left and right padding), ``none`` (no pooling).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._spans import TokenSpans

__all__ = ["POOLINGS", "masked_mean", "pool"]

POOLINGS = ("mean_image_tokens", "masked_mean", "first", "last", "none")


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden (B, T, D)`` over positions where ``mask (B, T)`` is True, in float32
    accumulation, returned in ``hidden``'s dtype. A sample with an empty mask is an error."""
    counts = mask.sum(1)
    if (counts == 0).any():
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"masked_mean: samples {empty} have no token in the span; nothing to average")
    total = (hidden.float() * mask[..., None].float()).sum(1)
    return (total / counts[:, None].float()).to(hidden.dtype)


def _index_of(mask: Tensor, last: bool) -> Tensor:
    if not mask.any(1).all():
        raise ValueError("first/last pooling: some samples have no valid token")
    if last:
        return mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
    return mask.int().argmax(1)


def pool(hidden: Tensor, spans: TokenSpans | Tensor | None, mode: str, span: str = "valid") -> Tensor:
    """Pool ``hidden (B, T, D)`` to ``(B, D)`` (``none``: unchanged).

    ``spans`` is a :class:`TokenSpans` for this sequence, or a ``(B, T)`` boolean mask of
    the tokens to use (then ``mean_image_tokens`` and ``masked_mean`` both average it).
    ``span`` picks the span for ``masked_mean`` / ``first`` / ``last``.
    """
    if mode not in POOLINGS:
        raise ValueError(f"pool: mode={mode!r} is not one of {POOLINGS}")
    if mode == "none":
        return hidden
    if spans is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    elif isinstance(spans, Tensor):
        mask = spans.bool()
    else:
        mask = spans["image" if mode == "mean_image_tokens" else span]
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"pool: mask shape {tuple(mask.shape)} does not match hidden (B, T) {tuple(hidden.shape[:2])}")
    mask = mask.to(hidden.device)
    if mode in ("mean_image_tokens", "masked_mean"):
        return masked_mean(hidden, mask)
    index = _index_of(mask, last=mode == "last")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
