"""Block specs of ``transformers`` decoder layers, registered by qualified class name.

Registering by name keeps ``import policylens.accel`` from importing these modeling files; a layer
is matched when its class (or a base class) has the name. Each branch is named by the submodule
whose output the layer adds to its residual stream (read from transformers 5.25's modeling files):

- Gemma, Llama, Qwen2: ``x = x + self_attn(input_layernorm(x))[0]``, then
  ``x = x + mlp(post_attention_layernorm(x))``. The attention returns ``(output, weights)``; its
  norm is a gate.
- Gemma2, Gemma3: ``x = x + post_attention_layernorm(self_attn(input_layernorm(x))[0])``, then
  ``x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))``: the output is the
  post-norm, the pre-norm and the attention / MLP are gates.
- pi0.5 (``PI05DecoderLayer``): ``normed, gate = input_layernorm(x, t)`` and
  ``x = x + gate * self_attn(normed)[0]`` (the MLP likewise). The adaptive norm's ``gate`` is read
  by the residual at every step, so the norms always run; the cached value is the attention / MLP
  output, multiplied by the current step's gate. Its residual is not a plain sum.

Every one of them is tested against a composition of its public submodules written in the test.

Called in pieces (LeRobot 0.4.4's SmolVLA on every path, pi0 / pi0.5 in their joint training pass: the
model calls ``input_layernorm``, ``q/k/v_proj``, its own attention function, ``o_proj``, adds the residual,
then ``post_attention_layernorm`` and ``mlp``, never the layer), a Gemma / Llama / Qwen2 layer's attention
branch is what ``o_proj`` returns, with the norm and ``q/k/v_proj`` as shaped gates, and its MLP branch is
what ``mlp`` returns. Both keep a copy (LeRobot adds the residual in place on what they return).
"""

from __future__ import annotations

from ._registry import BlockSpec, BranchSpec, register_block

__all__ = ["HF_LAYERS"]

_QKV = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_PIECES = BlockSpec(
    (
        BranchSpec("self_attn", "attn", "self_attn.o_proj", _QKV, shaped=True, copy=True, attention_gate=_QKV[1]),
        BranchSpec("mlp", "ffn", "mlp", gates=("post_attention_layernorm",), copy=True),
    )
)
_PLAIN = BlockSpec(
    (
        BranchSpec("self_attn", "attn", "self_attn", gates=("input_layernorm",)),
        BranchSpec("mlp", "ffn", "mlp", gates=("post_attention_layernorm",)),
    ),
    residual_sum=True,
    pieces=_PIECES,
)
_SANDWICH = BlockSpec(
    (
        BranchSpec("self_attn", "attn", "post_attention_layernorm", gates=("input_layernorm", "self_attn")),
        BranchSpec("mlp", "ffn", "post_feedforward_layernorm", gates=("pre_feedforward_layernorm", "mlp")),
    ),
    residual_sum=True,
)
_ADAPTIVE = BlockSpec((BranchSpec("self_attn", "attn", "self_attn"), BranchSpec("mlp", "ffn", "mlp")))

HF_LAYERS: dict[str, BlockSpec] = {
    "transformers.models.gemma.modeling_gemma.GemmaDecoderLayer": _PLAIN,
    "transformers.models.llama.modeling_llama.LlamaDecoderLayer": _PLAIN,
    "transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer": _PLAIN,
    "transformers.models.gemma2.modeling_gemma2.Gemma2DecoderLayer": _SANDWICH,
    "transformers.models.gemma3.modeling_gemma3.Gemma3DecoderLayer": _SANDWICH,
    "transformers.models.pi05.modeling_pi05.PI05DecoderLayer": _ADAPTIVE,
}

for _name, _spec in HF_LAYERS.items():
    register_block(_name, _spec)
