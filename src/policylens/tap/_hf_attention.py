"""Attention probabilities from Hugging Face models running SDPA, for selected layers only.

HF attention modules look their kernel up in ``AttentionInterface`` on every call.
While a capture is active, the ``sdpa`` entry points to :func:`_routing_sdpa`, which
computes ``softmax(QKᵀ·scale + mask)`` explicitly for the selected modules (the same
math as HF's eager path, float32 softmax) and hands every other module to the original
SDPA kernel untouched. Nothing in the model or its config changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["attention_with_probs", "route_probs", "unroute_probs"]

_LOCK = threading.Lock()
_SINKS: dict[int, Callable[[Tensor], None]] = {}
_STATE: dict[str, object] = {"original": None, "depth": 0}


def _repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    # (B, Hkv, T, d) -> (B, Hkv * n_rep, T, d)
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def attention_with_probs(
    module: nn.Module,
    query: Tensor,  # (B, H, Tq, d)
    key: Tensor,  # (B, Hkv, Tk, d)
    value: Tensor,  # (B, Hkv, Tk, d)
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention output ``(B, Tq, H, d)`` and probabilities ``(B, H, Tq, Tk)``, with the
    mask semantics of HF's SDPA path (bool mask: True attends; float mask: added)."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale  # (B, H, Tq, Tk)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    tq, tk = scores.shape[-2:]
    if attention_mask is not None:
        mask = attention_mask[..., :tk]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and tq > 1:  # SDPA's is_causal is aligned top-left
            upper = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(upper, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return out, probs


def _routing_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    sink = _SINKS.get(id(module))
    if sink is None:
        return _STATE["original"](
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
        )
    out, probs = attention_with_probs(
        module, query, key, value, attention_mask, dropout, scaling, is_causal, kw.get("softcap")
    )
    sink(probs)
    return out, probs


def route_probs(module: nn.Module, sink: Callable[[Tensor], None]) -> None:
    """Send ``module``'s attention probabilities to ``sink`` on every call until unrouted."""
    from transformers.modeling_utils import AttentionInterface

    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["original"] = AttentionInterface._global_mapping["sdpa"]
            AttentionInterface._global_mapping["sdpa"] = _routing_sdpa
        _STATE["depth"] += 1
        _SINKS[id(module)] = sink


def unroute_probs(module: nn.Module) -> None:
    """Undo :func:`route_probs`; the last one restores the original SDPA entry."""
    from transformers.modeling_utils import AttentionInterface

    with _LOCK:
        _SINKS.pop(id(module), None)
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0:
            AttentionInterface._global_mapping["sdpa"] = _STATE["original"]
            _STATE["original"] = None
