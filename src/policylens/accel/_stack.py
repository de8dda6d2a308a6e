"""Skipped steps of a whole pre-norm ``nn.TransformerEncoder`` / ``nn.TransformerDecoder`` in one pass.

A pre-norm layer (``norm_first=True``) adds each branch to its input: ``x = x + branch(norm(x))``,
and in eval the dropout after each branch returns its input unchanged. At a step where every
branch of every layer of the stack reuses its cache, the stack's output is its input plus the
cached branch outputs, added in the layers' own order, so the result is bit-for-bit the one the
layers give, without a Python call per layer, norm and wrapper. Any other step, a training-mode
stack or one called with key-padding masks runs the stack's own forward.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

STACKS = (nn.TransformerEncoder, nn.TransformerDecoder)
_POSITIONAL_OK = {nn.TransformerEncoder: 2, nn.TransformerDecoder: 4}  # (src, mask) / (tgt, memory, masks)
_PADDING = ("src_key_padding_mask", "tgt_key_padding_mask", "memory_key_padding_mask")


def fusable_stacks(model: nn.Module, states_by_block: dict[int, list]) -> list[tuple[nn.Module, list]]:
    """(stack, its layers' branch states in compute order) for every stack whose layers are all pre-norm
    and all cached."""
    out = []
    for module in model.modules():
        if not isinstance(module, STACKS):
            continue
        layers = list(module.layers)
        if layers and all(getattr(m, "norm_first", False) and id(m) in states_by_block for m in layers):
            out.append((module, [st for m in layers for st in states_by_block[id(m)]]))
    return out


def _all_reuse(states: list, step: int) -> bool:
    return all(st.step == step < st.num_steps and not st.mask[step] and st.cache is not None for st in states)


def stack_forward(stack: nn.Module, orig, states: list):
    """A forward for ``stack``: the cached sum when every branch reuses its cache this step, else ``orig``."""
    max_args = next((n for cls, n in _POSITIONAL_OK.items() if isinstance(stack, cls)), 1)

    @functools.wraps(orig)
    def forward(*args: Any, **kwargs: Any):
        step = states[0].step
        plain = len(args) <= max_args and all(kwargs.get(k) is None for k in _PADDING)
        if stack.training or not plain or not _all_reuse(states, step):
            return orig(*args, **kwargs)
        x = args[0] if args else kwargs.get("tgt", kwargs.get("src"))
        for st in states:
            cached = st.cache
            x = x + (cached[0] if isinstance(cached, tuple) else cached)
            st.step = step + 1
        return x if stack.norm is None else stack.norm(x)

    return forward
