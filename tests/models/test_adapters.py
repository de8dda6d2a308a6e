"""The adapter registry and the tap listing."""

import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig, get_adapter, list_adapters
from policylens.tap import list_taps
from zoo import tiny_decoder, tiny_vision


def test_registry_covers_the_promised_architectures():
    names = {n.rsplit(".", 1)[-1] for n in list_adapters()}
    for cls in (
        "PaliGemmaForConditionalGeneration",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Qwen2ForCausalLM",
        "LlamaForCausalLM",
        "SiglipVisionModel",
        "Dinov2Model",
        "TinyVLA",
        "PI0Policy",
        "PI05Policy",
        "SmolVLAPolicy",
    ):
        assert cls in names, cls


def test_unknown_model_lists_supported_and_how_to_register():
    with pytest.raises(TypeError, match=r"(?s)no adapter for torch\.nn.*Linear.*PaliGemma.*register_adapter"):
        get_adapter(torch.nn.Linear(2, 2))


def test_list_taps_fixed_order_with_paths_and_shapes(paligemma):
    taps = list_taps(paligemma)
    names = [t.name for t in taps]
    assert names == [t.name for t in list_taps(paligemma)]
    assert names[0] == "vision.layers.0.in"
    assert names.index("vision.layers.1.out") < names.index("llm.layers.0.in") < names.index("projector.out")
    probs = next(t for t in taps if t.name == "llm.layers.1.attn.probs")
    assert probs.module_path == "model.language_model.layers.1.self_attn" and probs.shape == "(B, H=4, Tq, Tk)"
    out = next(t for t in taps if t.name == "llm.layers.1.out")
    assert out.shape == "(B, T, D=32)"


def test_every_listed_tap_resolves_on_decoders_and_towers():
    for model in (tiny_decoder("qwen2"), tiny_vision("dinov2"), TinyVLA(TinyVLAConfig(image_size=28, layers=1))):
        from policylens.tap import resolve_taps

        names = [t.name for t in list_taps(model)]
        assert [p.name for p in resolve_taps(model, names)] == names
