"""Attention probabilities from Hugging Face models, for selected layers only.

HF attention modules look their kernel up on every call: the ``sdpa`` entry of
``AttentionInterface``, or, for the eager path, the ``eager_attention_forward`` function of
their modeling file. Some callers (LeRobot's pi0 / pi0.5 joint prefix + expert pass) call
that function directly, handing it a layer's attention module. While a capture is active:

- the ``sdpa`` entry points to :func:`_routing_sdpa`, which computes
  ``softmax(QKᵀ·scale + mask)`` explicitly for the selected modules (the same math as
  HF's eager path, float32 softmax) and hands every other module to the original SDPA
  kernel untouched;
- the modeling file's ``eager_attention_forward`` is wrapped so that, when the module it is
  handed is selected, the weights it already returns go to the sink as they are.

So a layer is captured whichever path runs, including a model that switches from SDPA to
eager after the hooks were attached. Nothing in the model or its config changes; the
originals are restored when the last route is removed.

Older transformers (VLA-Adapter pins 4.40.1) pick the attention class at construction and
have no ``AttentionInterface`` to route: there :func:`route_probs` refuses with
:class:`AttentionRoutingUnavailable`, which names the version needed and says that the
hidden-state taps work.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["AttentionRoutingUnavailable", "attention_with_probs", "route_probs", "routes_eager", "unroute_probs"]

NEEDS = "transformers>=4.57.1"  # policylens' supported range; AttentionInterface is what is routed


class AttentionRoutingUnavailable(ImportError):
    """This transformers has no ``AttentionInterface``, so attention probabilities cannot be routed."""


_LOCK = threading.Lock()
_SINKS: dict[int, Callable[[Tensor], None]] = {}
_STATE: dict[str, object] = {"original": None, "depth": 0}
_EAGER: dict[str, tuple[Callable, int]] = {}  # modeling module name -> (original function, routes)


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


def _wrap_eager(original: Callable) -> Callable:
    def routed_eager_attention_forward(module, *args, **kwargs):
        out, weights = original(module, *args, **kwargs)
        sink = _SINKS.get(id(module))
        if sink is not None and weights is not None:
            sink(weights)
        return out, weights

    routed_eager_attention_forward.__wrapped__ = original
    return routed_eager_attention_forward


def _attention_interface(module: nn.Module | None = None) -> type:
    """transformers' ``AttentionInterface``, or :class:`AttentionRoutingUnavailable` saying what works instead."""
    try:
        from transformers.modeling_utils import AttentionInterface
    except ImportError as exc:
        import transformers

        what = f" of {type(module).__name__}" if module is not None else ""
        raise AttentionRoutingUnavailable(
            f"attention probabilities (attn.probs taps){what} need {NEEDS}: policylens routes them through "
            f"transformers' AttentionInterface, which transformers {transformers.__version__} does not have. "
            "Hidden-state taps (*.in, *.out, *.attn.out, *.mlp.out, *.norm.out) and capture of them work on this "
            f"version; for attention maps drop the attn.probs taps here and run the model on {NEEDS}."
        ) from exc
    return AttentionInterface


def _has_eager_function(module: nn.Module) -> bool:
    return callable(getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None))


def routes_eager(module: nn.Module) -> bool:
    """Whether ``module``'s probabilities go through :func:`route_probs` rather than its output:
    its modeling file has an ``eager_attention_forward`` to route, or this transformers has no
    ``AttentionInterface`` (old releases; :func:`route_probs` then raises the explanation)."""
    if _has_eager_function(module):
        return True
    try:
        _attention_interface()
    except AttentionRoutingUnavailable:
        return True
    return False


def route_probs(module: nn.Module, sink: Callable[[Tensor], None]) -> None:
    """Send ``module``'s attention probabilities to ``sink`` on every call until unrouted."""
    AttentionInterface = _attention_interface(module)
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["original"] = AttentionInterface._global_mapping["sdpa"]
            AttentionInterface._global_mapping["sdpa"] = _routing_sdpa
        _STATE["depth"] += 1
        _SINKS[id(module)] = sink
        if _has_eager_function(module):
            name = type(module).__module__
            original, routes = _EAGER.get(name, (sys.modules[name].eager_attention_forward, 0))
            if routes == 0:
                sys.modules[name].eager_attention_forward = _wrap_eager(original)
            _EAGER[name] = (original, routes + 1)


def unroute_probs(module: nn.Module) -> None:
    """Undo :func:`route_probs`; the last one restores the original SDPA entry and eager functions."""
    AttentionInterface = _attention_interface(module)
    with _LOCK:
        _SINKS.pop(id(module), None)
        name = type(module).__module__
        if name in _EAGER:
            original, routes = _EAGER.pop(name)
            if routes > 1:
                _EAGER[name] = (original, routes - 1)
            else:
                sys.modules[name].eager_attention_forward = original
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0:
            AttentionInterface._global_mapping["sdpa"] = _STATE["original"]
            _STATE["original"] = None
