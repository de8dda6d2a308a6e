"""tap: capture hidden states and attention probabilities from any ``torch.nn.Module``.

>>> with capture(model, ["llm.layers.-2.out", "llm.layers.3.attn.probs"], dtype="float16") as cap:
...     model(**batch)
>>> cap["llm.layers.-2.out"].shape  # (B, T, D)
"""

from ._adapter import Adapter, Component, get_adapter, list_adapters, register_adapter, resolve_module
from ._capture import Capture, TapNotFiredError, TapNotFiredWarning, capture
from ._grid import ImageTransform, PatchGrid
from ._hf_attention import AttentionRoutingUnavailable, attention_with_probs
from ._mha_attention import mha_probs
from ._names import LAYER_POINTS, TapInfo, TapPoint, list_taps, resolve_taps, tap_name
from ._pooling import POOLINGS, masked_mean, pool
from ._probe import example_entry_points, probe_taps
from ._spans import Layout, TokenSpans, paligemma_spans, pi0_layout, prismatic_spans, suffix_spans

__all__ = [
    "LAYER_POINTS",
    "POOLINGS",
    "Adapter",
    "AttentionRoutingUnavailable",
    "Capture",
    "Component",
    "ImageTransform",
    "Layout",
    "PatchGrid",
    "TapInfo",
    "TapNotFiredError",
    "TapNotFiredWarning",
    "TapPoint",
    "TokenSpans",
    "attention_with_probs",
    "capture",
    "example_entry_points",
    "get_adapter",
    "list_adapters",
    "list_taps",
    "masked_mean",
    "mha_probs",
    "paligemma_spans",
    "pi0_layout",
    "pool",
    "prismatic_spans",
    "probe_taps",
    "register_adapter",
    "resolve_module",
    "resolve_taps",
    "suffix_spans",
    "tap_name",
]
