"""Encoder adapters on tiny random-weight models built from configs: preprocessing records,
patch features with prefix tokens dropped in row-major order, the registry and its errors."""

import importlib.util

import numpy as np
import pytest
import torch
import transformers

from policylens.align._encoders import adapt_encoder, create_encoder, list_encoders
from policylens.align._record import PreprocessRecord
from policylens.align._sampling import sample_features, uv_to_grid

SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _frames(b=2, h=40, w=60):
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8)


def _dinov2(registers=0):
    torch.manual_seed(0)
    if registers:
        cfg = transformers.Dinov2WithRegistersConfig(
            image_size=28, patch_size=14, num_register_tokens=registers, **SMALL
        )
        return transformers.Dinov2WithRegistersModel(cfg)
    return transformers.Dinov2Model(transformers.Dinov2Config(image_size=28, patch_size=14, **SMALL))


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("fit", ["centre_crop", "pad", "resize"])
def test_dinov2_features_drop_prefix_tokens(registers, fit):
    model = _dinov2(registers)
    enc = adapt_encoder(model, size=42, fit=fit)
    pixels, rec = enc.preprocess(_frames())
    assert pixels.shape == (2, 3, 42, 42) and rec == getattr(PreprocessRecord, fit)(
        (40, 60), 42, 14, 1 + registers, "dinov2"
    )
    feats = enc.features(pixels)
    assert feats.shape == (2, 3, 3, 32) and rec.grid_size == (3, 3) and rec.prefix_tokens == 1 + registers
    ref = model(pixel_values=pixels).last_hidden_state[:, 1 + registers :].reshape(2, 3, 3, 32)
    torch.testing.assert_close(feats, ref)


def test_siglip_resizes_to_its_fixed_size_without_prefix():
    torch.manual_seed(0)
    cfg = transformers.SiglipVisionConfig(image_size=28, patch_size=14, **SMALL)
    model = transformers.SiglipVisionModel(cfg)
    enc = adapt_encoder(model)
    pixels, rec = enc.preprocess(_frames())
    assert rec.input_size == (28, 28) and rec.prefix_tokens == 0 and rec.scale == (28 / 40, 28 / 60)
    assert pixels.min() >= -1 and pixels.max() <= 1  # mean = std = 0.5
    feats = enc.features(pixels)
    torch.testing.assert_close(feats, model(pixel_values=pixels).last_hidden_state.reshape(2, 2, 2, 32))


@pytest.mark.skipif(not hasattr(transformers, "DINOv3ViTModel"), reason="transformers has no DINOv3")
def test_dinov3_with_registers():
    torch.manual_seed(0)
    cfg = transformers.DINOv3ViTConfig(image_size=32, patch_size=16, num_register_tokens=2, **SMALL)
    model = transformers.DINOv3ViTModel(cfg)
    enc = adapt_encoder(model, size=48)
    pixels, rec = enc.preprocess(_frames())
    assert rec.prefix_tokens == 3 and rec.grid_size == (3, 3)
    feats = enc.features(pixels)
    torch.testing.assert_close(feats, model(pixel_values=pixels).last_hidden_state[:, 3:].reshape(2, 3, 3, 32))


def test_timm_vit():
    timm = pytest.importorskip("timm", reason="timm is optional", exc_type=ImportError)

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, reg_tokens=2)
    enc = create_encoder("timm", model)
    pixels, rec = enc.preprocess(_frames())
    assert rec.prefix_tokens == 3 and rec.grid_size == (2, 2)
    feats = enc.features(pixels)
    torch.testing.assert_close(feats, model.forward_features(pixels)[:, 3:].reshape(2, 2, 2, -1))


def test_point_lookup_end_to_end_matches_the_patch():
    """A frame pixel's nearest lookup is the feature of the patch its input pixel lies in."""
    enc = create_encoder("dinov2", _dinov2(), size=42, fit="pad")
    frames = _frames(1, 40, 60)
    pixels, rec = enc.preprocess(frames)
    feats = enc.features(pixels)[0]  # (3, 3, C)
    pts = uv_to_grid(torch.tensor([[0.0, 0.0], [59.0, 39.0], [30.0, 20.0]]), rec)
    out, valid = sample_features(feats.permute(2, 0, 1), pts, mode="nearest")
    assert valid.all()
    # 40 x 60 -> 28 x 42 content with 7-row bars: (0, 0) -> patch (0, 0); (59, 39) -> (2, 2); centre -> (1, 1)
    torch.testing.assert_close(out, torch.stack([feats[0, 0], feats[2, 2], feats[1, 1]]))


@pytest.mark.parametrize(
    ("name", "package"), [("vggt", "vggt"), ("depth_anything_3", "depth_anything_3"), ("croco", "croco")]
)
def test_optional_encoders_name_their_package(name, package):
    assert name in list_encoders()
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(ImportError, match=f"needs the package '{package}'.*PreprocessRecord.{name}"):
        create_encoder(name, torch.nn.Identity())


def test_registry_and_input_errors():
    with pytest.raises(KeyError, match="registered: .*dinov2"):
        create_encoder("dinov5")
    with pytest.raises(KeyError, match="no adapter for Linear"):
        adapt_encoder(torch.nn.Linear(2, 2))
    enc = adapt_encoder(_dinov2(), size=42)
    with pytest.raises(ValueError, match=r"frames must be \(B, H, W, 3\) uint8"):
        enc.preprocess(torch.zeros(1, 40, 60, 3))
    with pytest.raises(ValueError, match="fit='letterbox'"):
        adapt_encoder(_dinov2(), fit="letterbox")
    pixels, _ = enc.preprocess(_frames())
    enc.prefix_tokens = 0  # a wrong prefix count is caught, never silently shifts the grid
    with pytest.raises(ValueError, match="expected .*0 prefix"):
        enc.features(pixels)


def test_timm_record_matches_timms_eval_transform():
    """timm's own eval transform (Resize, CenterCrop, ToTensor, Normalize on a PIL image): the
    resized size and the crop offset equal the record's (exact), checked on a ramp image."""
    timm = pytest.importorskip("timm", reason="timm is optional", exc_type=ImportError)
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
    enc = create_encoder("timm", model)
    resize, crop = create_transform(**resolve_data_config({"input_size": (3, 64, 64)}, model=model)).transforms[:2]
    for frame in [(480, 644), (300, 301), (97, 211), (225, 343)]:
        rec = enc.record(frame)
        top, left, bottom, right = rec.transform.pad
        resized = resize(Image.new("RGB", frame[::-1]))
        assert resized.size[::-1] == (64 - top - bottom, 64 - left - right)  # PIL sizes are (w, h)
        yy, xx = np.meshgrid(np.arange(resized.size[1]), np.arange(resized.size[0]), indexing="ij")
        ramp = Image.fromarray(np.stack([yy, xx, 0 * yy], -1).astype(np.uint8))
        first = np.asarray(crop(ramp))[0, 0, :2]
        assert first.tolist() == [-top, -left] and rec.input_size == (64, 64)
