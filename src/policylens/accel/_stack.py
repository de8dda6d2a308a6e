"""Skipped steps of a whole stack of layers in one pass: torch's pre-norm ``nn.TransformerEncoder`` /
``nn.TransformerDecoder``, and transformers' Gemma / Gemma2 / Gemma3 / Llama / Qwen2 models (a flow
VLA's action expert).

A layer whose spec says ``residual_sum`` adds each branch to its input: ``x = x + branch(...)`` (a
pre-norm torch layer, whose dropout after each branch returns its input in eval; a transformers
decoder layer). At a step where every branch of every layer of the stack reuses its cache, the
stack's output is its input plus the cached branch outputs, added in the layers' own order, then
the stack's final norm, so the result is bit-for-bit the one the layers give. What no branch reads
goes: each layer's Python, norms and wrappers; for transformers models also the attention masks, the
rotary position embeddings and the key/value cache reads. Any other step, a training-mode stack, a
call with key-padding masks, ``input_ids`` instead of ``inputs_embeds``, a request for hidden states
or attentions, or an argument not listed here runs the stack's own forward.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from ._registry import BlockSpec, block_spec, qualified_name

_POSITIONAL_OK = {nn.TransformerEncoder: 2, nn.TransformerDecoder: 4}  # (src, mask) / (tgt, memory, masks)
_PADDING = ("src_key_padding_mask", "tgt_key_padding_mask", "memory_key_padding_mask")
_HF_STACKS = {  # models whose forward is: inputs_embeds -> layers in order -> norm
    f"transformers.models.{m}.modeling_{m}.{c}"
    for m, c in (
        ("gemma", "GemmaModel"),
        ("gemma2", "Gemma2Model"),
        ("gemma3", "Gemma3TextModel"),
        ("llama", "LlamaModel"),
        ("qwen2", "Qwen2Model"),
    )
}
# what the stack's forward may be given and still be fused (everything else means: run the layers)
_HF_KWARGS = {"inputs_embeds", "attention_mask", "position_ids", "cache", "past_key_values", "use_cache"}


def _all_reuse(states: list, step: int) -> bool:
    return all(st.step == step < st.num_steps and not st.mask[step] and st.cache is not None for st in states)


def _add_cached(x, states: list, step: int):
    for st in states:
        cached = st.cache
        x = x + (cached[0] if isinstance(cached, tuple) else cached)
        st.step = step + 1
    return x


def torch_stack_forward(stack: nn.Module, orig, states: list):
    """A forward for a torch stack: the cached sum when every branch reuses its cache this step, else ``orig``."""
    max_args = next((n for cls, n in _POSITIONAL_OK.items() if isinstance(stack, cls)), 1)

    @functools.wraps(orig)
    def forward(*args: Any, **kwargs: Any):
        step = states[0].step
        plain = len(args) <= max_args and all(kwargs.get(k) is None for k in _PADDING)
        if stack.training or not plain or not _all_reuse(states, step):
            return orig(*args, **kwargs)
        x = _add_cached(args[0] if args else kwargs.get("tgt", kwargs.get("src")), states, step)
        return x if stack.norm is None else stack.norm(x)

    return forward


def _hf_scales_inputs(stack: nn.Module) -> bool:
    # transformers 4.x Gemma / Gemma2 multiply inputs_embeds by sqrt(width) inside forward; 5.x folds
    # that into embed_tokens (which then has embed_scale) and leaves inputs_embeds alone
    return "gemma" in type(stack).__module__ and not hasattr(getattr(stack, "embed_tokens", None), "embed_scale")


def hf_stack_forward(stack: nn.Module, orig, states: list):
    """A forward for a transformers decoder model: when every branch reuses its cache this step and the
    call passes ``inputs_embeds`` only (no hidden states / attentions asked for), ``norm(inputs_embeds +
    cached outputs)`` as ``BaseModelOutputWithPast``; else ``orig``. The key/value cache passed in is
    handed back as it came: a skipped attention adds no keys either."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    cache_field = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
    config = stack.config
    fusable = not _hf_scales_inputs(stack) and len(stack.layers) == config.num_hidden_layers

    @functools.wraps(orig)
    def forward(*args: Any, **kwargs: Any):
        step = states[0].step
        plain = (
            fusable
            and not args
            and kwargs.get("inputs_embeds") is not None
            and kwargs.keys() <= _HF_KWARGS
            and not getattr(config, "output_hidden_states", False)
            and not getattr(config, "output_attentions", False)
        )
        if stack.training or not plain or not _all_reuse(states, step):
            return orig(*args, **kwargs)
        x = stack.norm(_add_cached(kwargs["inputs_embeds"], states, step))
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        return BaseModelOutputWithPast(last_hidden_state=x, **{cache_field: cache})

    return forward


def fusable_stacks(
    model: nn.Module, states_by_block: dict[int, list], specs: dict[int, BlockSpec] | None = None
) -> list[tuple[nn.Module, Any, list]]:
    """(stack, forward maker, its layers' branch states in compute order) for every stack under
    ``model`` whose layers all sum their residual and are all cached. ``specs``: id(layer) -> the spec the
    cache uses for it (a policy profile's), else the registered one."""
    specs = specs or {}
    out = []
    for module in model.modules():
        if isinstance(module, tuple(_POSITIONAL_OK)):
            make = torch_stack_forward
        elif qualified_name(type(module)) in _HF_STACKS:
            make = hf_stack_forward
        else:
            continue
        layers = list(module.layers)
        sums = all(id(m) in states_by_block and specs.get(id(m), block_spec(m)).sums_residual(m) for m in layers)
        if layers and sums:
            out.append((module, make, [st for m in layers for st in states_by_block[id(m)]]))
    return out
