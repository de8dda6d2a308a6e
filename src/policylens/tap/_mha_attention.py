"""Attention probabilities of ``nn.MultiheadAttention`` recomputed from its inputs.

``nn.TransformerEncoderLayer`` / ``DecoderLayer`` call their attention with
``need_weights=False`` (the fused kernel). A forward pre-hook reads the call's query,
key and masks and recomputes ``softmax(QKᵀ/√d + mask)`` with the module's own
projection weights, leaving the module's computation untouched.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["mha_probs"]


def _in_proj(mha: nn.MultiheadAttention) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    e = mha.embed_dim
    if mha._qkv_same_embed_dim:
        w_q, w_k = mha.in_proj_weight[:e], mha.in_proj_weight[e : 2 * e]
    else:
        w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
    b = mha.in_proj_bias
    return w_q, w_k, (b[:e] if b is not None else None), (b[e : 2 * e] if b is not None else None)


def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    # nn.MultiheadAttention convention: bool True = NOT allowed; float masks are added.
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def mha_probs(
    mha: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
) -> Tensor:
    """Per-head probabilities ``(B, H, Tq, Tk)`` equal to ``need_weights=True,
    average_attn_weights=False`` of the same call."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise NotImplementedError("attn.probs: nn.MultiheadAttention with add_bias_kv/add_zero_attn is not supported")
    if not mha.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    if query.dim() == 2:  # unbatched (T, E)
        query, key = query[None], key[None]
    w_q, w_k, b_q, b_k = _in_proj(mha)
    b, tq, _ = query.shape
    tk = key.shape[1]
    h, d = mha.num_heads, mha.head_dim
    q = nn.functional.linear(query, w_q, b_q).view(b, tq, h, d).transpose(1, 2)  # (B, H, Tq, d)
    k = nn.functional.linear(key, w_k, b_k).view(b, tk, h, d).transpose(1, 2)  # (B, H, Tk, d)
    scores = torch.matmul(q / math.sqrt(d), k.transpose(-2, -1))  # (B, H, Tq, Tk)
    if attn_mask is not None:
        add = _as_additive(attn_mask, scores.dtype)
        scores = scores + (add.view(b, h, tq, tk) if add.dim() == 3 else add)
    elif is_causal:
        upper = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(upper, float("-inf"))
    if key_padding_mask is not None:
        scores = scores + _as_additive(key_padding_mask, scores.dtype)[:, None, None, :]
    return torch.softmax(scores, dim=-1)
