"""Caching layers that a model calls in pieces (LeRobot 0.4.4's SmolVLA: ``input_layernorm``,
``q/k/v_proj``, its own attention function, ``o_proj``, the residual, ``post_attention_layernorm``,
``mlp``; never the layer module).

The attention branch is what ``o_proj`` returns and the MLP branch what ``mlp`` returns, so that is
what is cached. Three things differ from a layer called whole:

- the model reshapes what the gates return (``q_proj(h).view(B, T, -1, d)``), so a skipped gate
  returns zeros shaped like its real output: a zero-stride view of one zero, no memory, no compute;
- the model adds the residual in place on the branch output (``out += hidden``), so the cache keeps
  its own copy and a skipped step hands out a copy of it;
- the attention function is the model's, not a submodule: when the profile names the method that
  returns it (``get_attention_interface``), a skipped ``q_proj`` arms a flag and the next attention
  call returns zeros ``(B, T, H*d)`` instead of attending. What the model's own code still runs on a
  skipped step: the norm's input, rotary embeddings on the zero views, the key/value concatenation
  with the prefix cache and the slicing, all on the suffix tokens, or the prefix's keys for the cat.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn


class SkipFlag:
    """Set by a skipped attention gate; read (and cleared) by the next attention-function call."""

    __slots__ = ("armed",)

    def __init__(self) -> None:
        self.armed = False


def shaped_gate_forward(module: nn.Module, orig, st, flag: SkipFlag | None):
    """A gate that, on a skipped step, returns zeros shaped like its latest real output (made at step 0
    of each loop, which always computes) and arms ``flag``."""
    held: list[Any] = [None]

    @functools.wraps(orig)
    def forward(*args, **kwargs):
        s = st.step
        if module.training or s >= st.num_steps or st.mask[s] or held[0] is None:
            out = orig(*args, **kwargs)
            held[0] = out.new_zeros(()).expand(out.shape)
            return out
        if flag is not None:
            flag.armed = True
        return held[0]

    return forward


def _query(args: tuple, kwargs: dict):
    return args[3] if len(args) > 3 else kwargs.get("query_states", kwargs.get("query"))


def skipping_attention_interface(orig, flag: SkipFlag):
    """``get_attention_interface`` whose function returns zeros ``(B, T, H*d)`` once per armed flag."""

    @functools.wraps(orig)
    def get_attention_interface(*a, **k):
        fn = orig(*a, **k)

        def attention(*args, **kwargs):
            if flag.armed:
                flag.armed = False
                q = _query(args, kwargs)  # (B, T, H, d)
                return q.new_zeros(()).expand(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])
            return fn(*args, **kwargs)

        return attention

    return get_attention_interface
