"""Prefix (text -> image) and suffix (action -> image, per flow step) maps of the reference VLA
equal a plain computation from the full attention map, and every query's mass is accounted for."""

import pytest
import torch

from policylens.attention._extract import extract_attention
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import capture


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    return model, model.example_batch(batch_size=2)


def test_prefix_maps_equal_the_mean_text_row_over_each_cameras_patches(vla):
    model, batch = vla
    maps = extract_attention(model, batch, layers=[1], phases=["prefix"])[("prefix", 1)]
    with capture(model, ["llm.layers.1.attn.probs"]) as cap:
        model.run_prefix(batch)
    full = cap["llm.layers.1.attn.probs"]  # (B, H, P, P)
    prefix = model.token_layout(batch)["prefix"]
    for b in range(2):
        text = prefix["text"][b]
        for cam in model.config.cameras:
            image = prefix["image[" + cam + "]"][b]
            ref = full[b][:, text][:, :, image].mean(1).reshape(-1, 2, 2)  # (H, 2, 2)
            torch.testing.assert_close(maps.maps[cam][b], ref, rtol=0, atol=2e-3)  # captured in float16
    assert maps.maps["hand_camera"].shape == (2, model.config.heads, 2, 2)


def test_mass_adds_up_to_one_for_both_phases(vla):
    model, batch = vla
    out = extract_attention(model, batch, layers=[0, -1], heads=[1])
    for (_phase, _layer), m in out.items():
        total = m.mass["image"] + m.mass["text"] + m.mass["pad"] + m.mass["suffix"]
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=5e-3)
        on_cameras = sum(v.sum((-1, -2)) for v in m.maps.values())
        torch.testing.assert_close(on_cameras, m.mass["image"], rtol=0, atol=1e-4)
    suffix = out[("suffix", -1)]
    steps = suffix.steps["hand_camera"]
    assert steps.shape[0] == model.config.flow_steps and steps.shape[2] == 1  # one head kept
    torch.testing.assert_close(suffix.maps["hand_camera"], steps.mean(0))
    assert out[("prefix", 0)].mass["suffix"].abs().max() == 0


def test_bad_phase_and_step_are_named(vla):
    model, batch = vla
    with pytest.raises(ValueError, match="phase 'middle'"):
        extract_attention(model, batch, layers=[0], phases=["middle"])
    with pytest.raises(ValueError, match="step='median'"):
        extract_attention(model, batch, layers=[0], step="median")


def test_hf_paligemma_prefix_maps_match_eager_output_attentions():
    from zoo import eager_twin, paligemma_batch, tiny_paligemma

    model = tiny_paligemma()
    batch = paligemma_batch(n_images=2, text=5, batch=2)
    maps = extract_attention(model, batch, layers=[1], phases=["prefix"])[("prefix", 1)]
    ref = eager_twin(model)(**batch, output_attentions=True).attentions[1]  # (B, H, T, T)
    mask = batch["attention_mask"].bool()
    for b in range(2):
        text = torch.zeros_like(mask[b])
        text[8:] = mask[b, 8:]  # 2 images x 4 tokens, then text
        for k, cam in enumerate(["cam0", "cam1"]):
            expected = ref[b][:, text][:, :, 4 * k : 4 * k + 4].mean(1).reshape(-1, 2, 2)
            torch.testing.assert_close(maps.maps[cam][b], expected, rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="phases=\\['prefix'\\]"):
        extract_attention(model, batch, layers=[1])
