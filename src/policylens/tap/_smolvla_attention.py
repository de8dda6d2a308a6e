"""Attention probabilities of LeRobot's SmolVLA, whose ``SmolVLMWithExpertModel`` computes attention itself.

SmolVLA runs no attention module: per layer, its ``forward_attn_layer`` projects the queries / keys / values of
the streams present (the prefix through the VLM's layer, the suffix through the expert's), concatenates them and
hands them to the function ``get_attention_interface()`` returns (LeRobot 0.4.4: its own
``eager_attention_forward(mask, batch_size, head_dim, q, k, v)``) — one call holding the query rows of both
streams; ``forward_cross_attn_layer`` makes up to two calls: the prefix alone (when the prefix is given), then the
expert's queries against the prefix keys / values. While a capture asks for a layer's probabilities:

- the owner's two layer methods are wrapped (instance attributes) to note, for each attention call they make,
  which layer's queries hold which rows;
- its ``get_attention_interface`` is wrapped so that each call also computes ``softmax(QKᵀ/√d, bool mask)`` from
  the call's own query, key and mask with the operations of LeRobot's eager function (float32 scores, masked
  scores at the float32 minimum, cast to the value dtype), so the probabilities equal the eager ones whichever
  function the model runs, and each selected layer gets its rows ``(B, H, T_rows, T_keys)``.

The model's computation is untouched (the probabilities are computed beside it) and the wrappers are removed
when the last route of an owner is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["eager_smolvla_probs", "route_smolvla", "smolvla_owner"]

METHODS = ("forward_attn_layer", "forward_cross_attn_layer", "get_attention_interface")
_LOCK = threading.Lock()
_SINKS: dict[int, Callable[[Tensor], None]] = {}  # id(layer.self_attn) -> sink
_OWNERS: dict[int, dict] = {}  # id(owner) -> {"routes": n, "saved": {method: instance value or None}, "plan": [...]}


def eager_smolvla_probs(
    attention_mask: Tensor,  # (B, Tq, Tk) bool, True attends
    batch_size: int,
    head_dim: int,
    query: Tensor,  # (B, Tq, H, d)
    key: Tensor,  # (B, Tk, Hkv, d)
    n_heads: int,
    n_kv_heads: int,
    dtype: torch.dtype,
) -> Tensor:
    """``(B, H, Tq, Tk)`` probabilities as LeRobot 0.4.4's ``SmolVLMWithExpertModel.eager_attention_forward``
    computes them (same operations, so the same values), cast to ``dtype`` (the value dtype) as it does."""
    groups, t = n_heads // n_kv_heads, key.shape[1]
    key = key[:, :, :, None, :].expand(batch_size, t, n_kv_heads, groups, head_dim)
    key = key.reshape(batch_size, t, n_kv_heads * groups, head_dim)
    q = query.to(dtype=torch.float32).transpose(1, 2)  # (B, H, Tq, d)
    k = key.to(dtype=torch.float32).transpose(1, 2)  # (B, H, Tk, d)
    scores = torch.matmul(q, k.transpose(2, 3))
    scores *= head_dim**-0.5
    scores = torch.where(attention_mask[:, None, :, :], scores, torch.finfo(scores.dtype).min)
    return nn.functional.softmax(scores, dim=-1).to(dtype=dtype)


def smolvla_owner(root: nn.Module, attn: nn.Module) -> nn.Module:
    """The module under ``root`` that computes ``attn``'s attention (LeRobot's ``SmolVLMWithExpertModel``)."""
    for module in root.modules():
        if all(callable(getattr(module, m, None)) for m in METHODS) and any(s is attn for s in module.modules()):
            return module
    raise ValueError(
        f"attn.probs of {type(attn).__name__}: attention='smolvla' needs a module above it with "
        f"{', '.join(METHODS)} (LeRobot's SmolVLMWithExpertModel), and {type(root).__name__} has none; "
        "give the component the attention kind its model really uses (or attention='none')"
    )


def _rows(layer: nn.Module | None, embeds: Tensor | None) -> list[tuple[nn.Module, int]]:
    return [] if layer is None or embeds is None else [(layer.self_attn, embeds.shape[1])]


def _wrap_self(owner: nn.Module, state: dict, original: Callable) -> Callable:
    def forward_attn_layer(model_layers, inputs_embeds, layer_idx, *args, **kwargs):
        # one call: the query rows of every stream present, prefix first
        streams = [r for k, x in enumerate(inputs_embeds) for r in _rows(model_layers[k][layer_idx], x)]
        return _planned(state, [streams], original, model_layers, inputs_embeds, layer_idx, *args, **kwargs)

    return forward_attn_layer


def _wrap_cross(owner: nn.Module, state: dict, original: Callable) -> Callable:
    def forward_cross_attn_layer(model_layers, inputs_embeds, layer_idx, position_ids, attention_mask, *args, **kw):
        past = kw.get("past_key_values", args[4] if len(args) > 4 else None)
        calls = []
        if len(inputs_embeds) == 2 and not past:  # the prefix attends to itself first
            calls.append(_rows(model_layers[0][layer_idx], inputs_embeds[0]))
        if model_layers[1][layer_idx] is not None:  # then the expert's queries attend to the prefix keys
            calls.append(_rows(model_layers[1][layer_idx], inputs_embeds[-1]))
        return _planned(
            state, calls, original, model_layers, inputs_embeds, layer_idx, position_ids, attention_mask, *args, **kw
        )

    return forward_cross_attn_layer


def _planned(state: dict, calls: list, original: Callable, *args, **kwargs):
    state["plan"] = list(calls)
    try:
        out = original(*args, **kwargs)
    finally:
        left, state["plan"] = state["plan"], []
    if left:
        raise RuntimeError(
            f"SmolVLA attention: layer {args[2]} made {len(calls) - len(left)} attention calls where policylens "
            f"expected {len(calls)} (LeRobot 0.4.4's calling convention); this LeRobot computes attention "
            "differently: capture without the llm / expert attn.probs taps"
        )
    return out


def _wrap_interface(owner: nn.Module, state: dict, original: Callable) -> Callable:
    def get_attention_interface():
        function = original()

        def attention_with_probs(attention_mask, batch_size, head_dim, query, key, value, *args, **kwargs):
            if not state["plan"]:
                raise RuntimeError(
                    "SmolVLA attention: an attention call outside forward_attn_layer / forward_cross_attn_layer, "
                    "which policylens cannot place (LeRobot 0.4.4 makes none); capture without the llm / expert "
                    "attn.probs taps"
                )
            streams = state["plan"].pop(0)
            if sum(n for _, n in streams) != query.shape[1]:
                raise RuntimeError(
                    f"SmolVLA attention: a call with {query.shape[1]} query rows where policylens expected "
                    f"{[n for _, n in streams]} (LeRobot 0.4.4's layout); capture without the attn.probs taps"
                )
            sinks = [_SINKS.get(id(attn)) for attn, _ in streams]
            if any(sinks):
                probs = eager_smolvla_probs(
                    attention_mask,
                    batch_size,
                    head_dim,
                    query,
                    key,
                    owner.num_attention_heads,
                    owner.num_key_value_heads,
                    value.dtype,
                )  # (B, H, Tq, Tk)
                start = 0
                for sink, (_, n) in zip(sinks, streams, strict=True):
                    if sink is not None:
                        sink(probs[:, :, start : start + n])
                    start += n
            return function(attention_mask, batch_size, head_dim, query, key, value, *args, **kwargs)

        return attention_with_probs

    return get_attention_interface


class _Route:
    """A capture's handle: ``remove()`` undoes :func:`route_smolvla`."""

    def __init__(self, owner: nn.Module, attn: nn.Module) -> None:
        self.owner, self.attn = owner, attn

    def remove(self) -> None:
        with _LOCK:
            _SINKS.pop(id(self.attn), None)
            state = _OWNERS[id(self.owner)]
            state["routes"] -= 1
            if state["routes"]:
                return
            del _OWNERS[id(self.owner)]
            for name, saved in state["saved"].items():
                if saved is None:
                    delattr(self.owner, name)
                else:
                    setattr(self.owner, name, saved)


def route_smolvla(root: nn.Module, attn: nn.Module, sink: Callable[[Tensor], None]) -> _Route:
    """Send the probabilities of the attention calls that ``attn``'s layer makes (its query rows) to ``sink``
    until the returned handle's ``remove()``; ``root`` is the model holding the SmolVLA core."""
    owner = smolvla_owner(root, attn)
    for name in ("num_attention_heads", "num_key_value_heads"):
        if not isinstance(getattr(owner, name, None), int):
            raise ValueError(f"attention='smolvla': {type(owner).__name__} has no integer {name}")
    with _LOCK:
        _SINKS[id(attn)] = sink
        state = _OWNERS.get(id(owner))
        if state is None:
            state = {"routes": 0, "saved": {m: vars(owner).get(m) for m in METHODS}, "plan": []}
            _OWNERS[id(owner)] = state
            wraps = (_wrap_self, _wrap_cross, _wrap_interface)
            for name, wrap in zip(METHODS, wraps, strict=True):
                setattr(owner, name, wrap(owner, state, getattr(owner, name)))
        state["routes"] += 1
    return _Route(owner, attn)
