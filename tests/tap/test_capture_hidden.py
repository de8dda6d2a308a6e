"""Hidden-state taps equal the model's own ``output_hidden_states`` reference."""

import pytest
import torch

from policylens.tap import capture
from zoo import paligemma_batch, tiny_decoder


def test_paligemma_hidden_states_equal_output_hidden_states(paligemma):
    batch = paligemma_batch()
    n = paligemma.config.text_config.num_hidden_layers
    taps = ["llm.layers.0.in"] + [f"llm.layers.{i}.out" for i in range(n - 1)] + ["llm.norm.out"]
    with capture(paligemma, taps) as cap:
        out = paligemma(**batch)
    ref = paligemma(**batch, output_hidden_states=True).hidden_states
    assert len(ref) == n + 1
    for i, name in enumerate(taps):
        torch.testing.assert_close(cap[name], ref[i], rtol=0, atol=0)
    torch.testing.assert_close(out.logits, paligemma(**batch).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gemma", "qwen2", "llama"])
def test_decoder_negative_index_and_dtype(family):
    model = tiny_decoder(family)
    ids = torch.randint(0, 60, (2, 7))
    with capture(model, ["llm.layers.-2.out", "llm.layers.1.mlp.out"], dtype="bfloat16") as cap:
        model(input_ids=ids)
    ref = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert cap["llm.layers.-2.out"].dtype == torch.bfloat16
    torch.testing.assert_close(cap["llm.layers.-2.out"], ref[2].to(torch.bfloat16), rtol=0, atol=0)
    assert cap["llm.layers.1.mlp.out"].shape == (2, 7, 32)


def test_positions_are_sliced_before_the_copy(paligemma):
    batch = paligemma_batch()
    with capture(paligemma, ["llm.layers.1.out"]) as full:
        paligemma(**batch)
    with capture(paligemma, ["llm.layers.1.out"], positions=slice(0, 8), dtype=torch.float16) as part:
        paligemma(**batch)
    assert part["llm.layers.1.out"].shape == (2, 8, 32)
    torch.testing.assert_close(part["llm.layers.1.out"], full["llm.layers.1.out"][:, :8].half(), rtol=0, atol=0)


def test_stop_early_ends_forward_after_last_tap(paligemma):
    batch = paligemma_batch()
    after = []
    later = paligemma.model.language_model.layers[2].register_forward_hook(lambda *a: after.append(1))
    try:
        with capture(paligemma, ["llm.layers.0.out"], stop_early=True) as cap:
            paligemma(**batch)
            after.append("body finished")
    finally:
        later.remove()
    assert after == []
    assert cap["llm.layers.0.out"].shape[:2] == (2, 13)


def test_hooks_removed_and_model_bit_identical(paligemma):
    batch = paligemma_batch()
    before = {k: v.clone() for k, v in paligemma.state_dict().items()}
    plain = paligemma(**batch).logits
    with capture(paligemma, ["llm.layers.0.out", "vision.layers.1.attn.probs", "llm.layers.2.attn.probs"]):
        paligemma(**batch)
    hooks = [m for m in paligemma.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooks == []
    torch.testing.assert_close(paligemma(**batch).logits, plain, rtol=0, atol=0)
    for key, value in paligemma.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unknown_tap_lists_close_matches(paligemma):
    with pytest.raises(KeyError, match=r"llm\.layers\.1\.out"):
        with capture(paligemma, ["llm.layer.1.out"]):
            pass
    n = len(paligemma.model.language_model.layers)
    with pytest.raises(KeyError, match=rf"does not exist.* llm has {n} layers: indices 0\.\.{n - 1} \(or -{n}\.\.-1\)"):
        with capture(paligemma, ["llm.layers.99.out"]):
            pass
    with pytest.raises(KeyError, match=rf"llm has {n} layers"):
        with capture(paligemma, [f"llm.layers.-{n + 1}.attn.probs"]):
            pass
    with pytest.raises(KeyError) as not_a_layer:
        with capture(paligemma, ["llm.layers.1.attention.out"]):
            pass
    assert "layers:" not in str(not_a_layer.value)  # an index in range: no layer-count note


def test_bad_dtype_is_named():
    model = tiny_decoder("gemma")
    with pytest.raises(ValueError, match="dtype='half'"):
        with capture(model, ["llm.layers.0.out"], dtype="half"):
            pass
