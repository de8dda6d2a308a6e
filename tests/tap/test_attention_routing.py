"""Attention probabilities are captured whichever path computes them: a model that switches
from SDPA to eager after the hooks are attached (as LeRobot's pi0 does in ``sample_actions``),
and a caller that hands a layer's attention module to ``eager_attention_forward`` as a free
function (pi0's joint prefix + expert pass)."""

import torch
from transformers.models.gemma import modeling_gemma

from policylens.tap import capture
from zoo import eager_twin, tiny_decoder


def test_switch_to_eager_after_attach_is_captured_exactly():
    model = tiny_decoder("gemma")
    ids = torch.randint(0, 60, (2, 7))
    original = modeling_gemma.eager_attention_forward
    with capture(model, ["llm.layers.1.attn.probs"]) as cap:
        model.config._attn_implementation = "eager"  # flipped at call time, as LeRobot does
        model(input_ids=ids)
    assert modeling_gemma.eager_attention_forward is original
    ref = eager_twin(model)(input_ids=ids, output_attentions=True).attentions[1]
    torch.testing.assert_close(cap["llm.layers.1.attn.probs"], ref, rtol=0, atol=0)


def test_free_function_call_on_a_selected_module_is_captured():
    model = tiny_decoder("gemma")
    attn = model.model.layers[0].self_attn
    other = model.model.layers[1].self_attn
    q, k, v = (torch.randn(2, attn.config.num_attention_heads, 5, attn.head_dim) for _ in range(3))
    k, v = k[:, : attn.config.num_key_value_heads], v[:, : attn.config.num_key_value_heads]
    with capture(model, ["llm.layers.0.attn.probs"]) as cap:
        _, weights = modeling_gemma.eager_attention_forward(attn, q, k, v, None, attn.scaling)
        modeling_gemma.eager_attention_forward(other, q, k, v, None, attn.scaling)  # not selected: not captured
    torch.testing.assert_close(cap["llm.layers.0.attn.probs"], weights, rtol=0, atol=0)
    assert torch.allclose(weights.sum(-1), torch.ones(()))
    assert modeling_gemma.eager_attention_forward.__name__ == "eager_attention_forward"
