"""Attention probabilities from Hugging Face models, for selected layers only.

HF attention modules look their kernel up on every call: the ``sdpa`` entry of
``AttentionInterface``, or, for the eager path, the ``eager_attention_forward`` function of
their modeling file. Some callers (LeRobot's pi0 / pi0.5 joint prefix + expert pass) call
that function directly, handing it a layer's attention module. While a capture is active:

- the ``sdpa`` entry points to :func:`_routing_sdpa`, which hands every module that is not
  selected to the original SDPA kernel untouched. For a selected module it computes
  ``softmax(QKᵀ·scale + mask)`` explicitly (the same math as HF's eager path, float32 softmax).
  When the route was given the query rows its sink keeps (``rows=``) and they are at most half
  of the call's queries (the text rows of a decoder layer), only those rows are computed and the
  layer's output comes from the original kernel, so the model computes exactly what it computes
  without a capture and the extra work is ``rows × keys`` scores. Otherwise (no ``rows``, or most
  rows kept: an expert's action rows) every row is computed and the output is ``probs @ V``, one
  pass with no kernel call beside it;
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
_ROWS: dict[int, tuple[Callable[[int, torch.device], Tensor | None], Callable[[Tensor], None]]] = {}
_STATE: dict[str, object] = {"original": None, "depth": 0}
_EAGER: dict[str, tuple[Callable, int]] = {}  # modeling module name -> (original function, routes)


def _probs(
    module: nn.Module,
    query: Tensor,  # (B, H, R, d): the call's rows, or only ``rows`` of them
    key: Tensor,  # (B, Hkv, Tk, d)
    attention_mask: Tensor | None,
    scaling: float | None,
    is_causal: bool | None,
    softcap: float | None,
    tq: int,
    rows: Tensor | None = None,  # (R,) positions of ``query``'s rows among the call's ``tq``
) -> Tensor:
    """``(B, H, R, Tk)`` probabilities, with the mask semantics of HF's SDPA path (bool mask:
    True attends; float mask: added). Grouped heads share their key block: the query heads of
    one key head are folded into its rows, so keys are never repeated (a copy) and each score is
    the same dot product as against the repeated keys."""
    b, h, r, d = query.shape
    hkv = key.shape[1]
    scale = scaling if scaling is not None else d**-0.5
    folded = query.reshape(b, hkv, (h // hkv) * r, d)  # (B, Hkv, n_rep * R, d)
    scores = torch.matmul(folded, key.transpose(2, 3)).view(b, h, r, -1) * scale  # (B, H, R, Tk)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    tk = scores.shape[-1]
    if attention_mask is not None:
        mask = attention_mask[..., :tk]
        if rows is not None and mask.shape[-2] == tq and tq > 1:
            mask = mask.index_select(-2, rows)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and tq > 1:  # SDPA's is_causal is aligned top-left
            upper = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(1)
            upper = upper if rows is None else upper.index_select(0, rows)
            scores = scores.masked_fill(upper, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


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
    b, h, tq, d = query.shape
    hkv = key.shape[1]
    probs = _probs(module, query, key, attention_mask, scaling, is_causal, softcap, tq)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training) if dropout else probs
    out = torch.matmul(dropped.reshape(b, hkv, (h // hkv) * tq, -1), value)  # (B, Hkv, n_rep * Tq, d)
    return out.view(b, h, tq, d).transpose(1, 2).contiguous(), probs


def _routing_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    sink = _SINKS.get(id(module))
    if sink is None:
        return _STATE["original"](
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
        )
    tq = query.shape[2]
    rows_of, rows_sink = _ROWS.get(id(module), (None, None))
    rows = rows_of(tq, query.device) if rows_of is not None else None
    if rows is not None and 2 * rows.numel() <= tq:
        # few rows (a prefix's text rows): the model's own kernel for the output, and the kept rows'
        # probabilities only; with most rows kept (an expert's action rows) one explicit pass costs less
        out = _STATE["original"](
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
        )
        kept = query.index_select(2, rows)  # (B, H, R, d)
        rows_sink(_probs(module, kept, key, attention_mask, scaling, is_causal, kw.get("softcap"), tq, rows))
        return out
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


def route_probs(
    module: nn.Module,
    sink: Callable[[Tensor], None],
    rows: tuple[Callable[[int, torch.device], Tensor | None], Callable[[Tensor], None]] | None = None,
) -> None:
    """Send ``module``'s attention probabilities to ``sink`` on every call until unrouted.

    ``rows``: ``(rows_of, rows_sink)``. ``rows_of(n_queries, device)`` gives the query positions
    (a long tensor, or None for all) the caller keeps of an SDPA call; when they are at most half
    the call's queries, only those rows are computed and handed to ``rows_sink`` ``(B, H, R, Tk)``,
    and the output comes from the original kernel. Otherwise, and for eager calls, ``sink`` gets
    every row."""
    AttentionInterface = _attention_interface(module)
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["original"] = AttentionInterface._global_mapping["sdpa"]
            AttentionInterface._global_mapping["sdpa"] = _routing_sdpa
        _STATE["depth"] += 1
        _SINKS[id(module)] = sink
        if rows is not None:
            _ROWS[id(module)] = rows
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
        _ROWS.pop(id(module), None)
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
