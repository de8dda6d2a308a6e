"""Attention probabilities of selected layers under SDPA equal eager ``output_attentions``."""

import pytest
import torch
from transformers.modeling_utils import AttentionInterface

from policylens.tap import capture, mha_probs
from zoo import eager_twin, paligemma_batch, tiny_decoder, tiny_vision

ATOL = 1e-5


def test_paligemma_selected_layers_match_eager(paligemma):
    batch = paligemma_batch()
    sdpa_entry = AttentionInterface._global_mapping["sdpa"]
    taps = ["llm.layers.0.attn.probs", "llm.layers.2.attn.probs", "vision.layers.1.attn.probs"]
    with capture(paligemma, taps) as cap:
        out = paligemma(**batch).logits
    assert AttentionInterface._global_mapping["sdpa"] is sdpa_entry
    eager = eager_twin(paligemma)
    ref = eager(**batch, output_attentions=True)
    torch.testing.assert_close(cap["llm.layers.0.attn.probs"], ref.attentions[0], rtol=0, atol=ATOL)
    torch.testing.assert_close(cap["llm.layers.2.attn.probs"], ref.attentions[2], rtol=0, atol=ATOL)
    torch.testing.assert_close(out, paligemma(**batch).logits, rtol=0, atol=ATOL)
    vision_ref = eager.model.vision_tower(batch["pixel_values"], output_attentions=True).attentions[1]
    torch.testing.assert_close(cap["vision.layers.1.attn.probs"], vision_ref, rtol=0, atol=ATOL)
    assert cap["llm.layers.0.attn.probs"].shape == (2, 4, 13, 13)


@pytest.mark.parametrize("family", ["gemma", "qwen2", "llama"])
def test_decoders_with_gqa_match_eager(family):
    model = tiny_decoder(family)
    ids = torch.randint(0, 60, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    with capture(model, ["llm.layers.-1.attn.probs"], heads=[1, 3]) as cap:
        model(input_ids=ids, attention_mask=mask)
    ref = eager_twin(model)(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[-1]
    torch.testing.assert_close(cap["llm.layers.-1.attn.probs"], ref[:, [1, 3]], rtol=0, atol=ATOL)


@pytest.mark.parametrize("family", ["siglip", "dinov2"])
def test_vision_towers_match_eager(family):
    model = tiny_vision(family)
    pixels = torch.randn(2, 3, 28, 28)
    with capture(model, ["vision.layers.0.attn.probs"]) as cap:
        model(pixel_values=pixels)
    ref = eager_twin(model)(pixel_values=pixels, output_attentions=True).attentions[0]
    torch.testing.assert_close(cap["vision.layers.0.attn.probs"], ref, rtol=0, atol=ATOL)


def test_eager_model_probs_come_from_its_own_output():
    model = eager_twin(tiny_decoder("gemma"))
    ids = torch.randint(0, 60, (1, 6))
    with capture(model, ["llm.layers.1.attn.probs"]) as cap:
        model(input_ids=ids)
    ref = model(input_ids=ids, output_attentions=True).attentions[1]
    torch.testing.assert_close(cap["llm.layers.1.attn.probs"], ref, rtol=0, atol=0)


@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_probs_equal_need_weights(batch_first):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    shape_q, shape_k = ((2, 5, 16), (2, 7, 16)) if batch_first else ((5, 2, 16), (7, 2, 16))
    q, k = torch.randn(shape_q), torch.randn(shape_k)
    attn_mask = torch.zeros(5, 7, dtype=torch.bool)
    attn_mask[:, -1] = True
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 0] = True
    _, ref = mha(q, k, k, attn_mask=attn_mask, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(mha_probs(mha, q, k, attn_mask, pad), ref, rtol=0, atol=ATOL)


def test_transformer_decoder_layer_probs_via_capture():
    from policylens.tap import Adapter, Component

    torch.manual_seed(0)
    layer = torch.nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True).eval()
    net = torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([layer])})
    net.policylens_adapter = Adapter("toy", (Component("dec", layers=("blocks",), mlp="linear2", attention="mha"),))
    tgt, mem = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5)
    with capture(net, ["dec.layers.0.attn.probs"]) as cap:
        layer(tgt, mem, tgt_mask=causal)
    x = layer.norm1(tgt)
    _, ref = layer.self_attn(x, x, x, attn_mask=causal, average_attn_weights=False)
    torch.testing.assert_close(cap["dec.layers.0.attn.probs"], ref, rtol=0, atol=ATOL)
