"""Encoder records built from a checkpoint's own image processor, checked against what the processor
really does: a marker pixel painted in the frame comes out of the processor where the record maps it,
the processor's output sizes and crop offsets equal the record's, and the encoder's own pixels equal
the processor's pixel_values within a stated tolerance."""

import json
import warnings

import numpy as np
import pytest
import torch
import transformers
from torch.nn import functional as F

from policylens.align._encoders import adapt_encoder, create_encoder
from policylens.align._hf_processor import processor_settings
from policylens.align._record import PreprocessRecord

SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
FRAMES = [(480, 640), (640, 480), (300, 301), (224, 224), (333, 517), (97, 211)]


def _pil(name):
    """The PIL-backend processor class (transformers 5: ``...Pil``; 4: the slow class)."""
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def _bit(**kw):
    return _pil("BitImageProcessor")(size={"shortest_edge": 256}, crop_size=224, resample=3, **IMAGENET, **kw)


def _siglip(**kw):
    return _pil("SiglipImageProcessor")(size={"height": 224, "width": 224}, resample=3, **kw)


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory):
    """A DINOv2 checkpoint as the hub ships it: config.image_size=518, the processor 256 -> 224."""
    path = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    transformers.Dinov2Model(transformers.Dinov2Config(image_size=518, patch_size=14, **SMALL)).save_pretrained(path)
    _bit().save_pretrained(path)
    return path


def _load(path):
    return transformers.Dinov2Model.from_pretrained(path, local_files_only=True)


def _markers(rec, n, seed):
    """``n`` integer frame pixels whose images lie >= 6 px inside the network input."""
    g = torch.Generator().manual_seed(seed)
    h, w = rec.input_size
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([w - 12.0, h - 12.0]) + 6
    uv = rec.transform.input_to_frame(xy).round()
    return uv.clamp(torch.zeros(2), torch.tensor(rec.original_size[::-1]) - 1.0)


def _observed(out):
    """(x, y) centroid of each (h, w) image's positive response in a window around its peak."""
    found = []
    for o in out.astype(np.float64):
        y, x = np.unravel_index(o.argmax(), o.shape)
        ys, xs = slice(max(y - 5, 0), y + 6), slice(max(x - 5, 0), x + 6)
        wgt = np.clip(o[ys, xs], 0, None)
        yy, xx = np.mgrid[ys, xs]
        found.append(((wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()))
    return np.array(found)


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("kind", ["dinov2", "siglip"])
def test_a_marker_lands_where_the_record_maps_it(frame, kind, dinov2_dir):
    """One white pixel per black frame: the processor's output has it at the record's mapped input
    position within 1 px (measured: <= 0.06 px), and points 1.5 px clear of a patch edge fall in the
    same patch. The old recipe (centre crop straight to 224) misses by ~10 px."""
    if kind == "dinov2":
        proc, rec = _bit(), adapt_encoder(_load(dinov2_dir)).record(frame)
        assert rec == PreprocessRecord.dinov2(frame)
    else:
        torch.manual_seed(0)
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(image_size=28, patch_size=14, **SMALL))
        proc, rec = _siglip(), create_encoder("siglip", model, processor=_siglip()).record(frame)
        assert rec == PreprocessRecord.resize(frame, 224, 14, 0, "siglip")
    uv = _markers(rec, 10, seed=frame[0])
    images = np.zeros((len(uv), *frame, 3), np.uint8)
    images[np.arange(len(uv)), uv[:, 1].long().numpy(), uv[:, 0].long().numpy()] = 255
    out = proc(list(images), do_normalize=False, return_tensors="np")["pixel_values"]
    assert out.shape == (len(uv), 3, *rec.input_size)  # output shapes agree
    seen, want = _observed(out[:, 0]), rec.transform.frame_to_input(uv).numpy()
    assert np.abs(seen - want).max() <= 1.0
    clear = (np.abs((want + 0.5) / 14 - np.round((want + 0.5) / 14)) * 14 > 1.5).all(axis=1)
    cell = lambda xy: np.floor((xy + 0.5) / 14)  # noqa: E731
    assert clear.sum() >= 3 and (cell(seen[clear]) == cell(want[clear])).all()
    if kind == "dinov2" and frame != (224, 224):
        old = PreprocessRecord.centre_crop(frame, 224, 14).transform.frame_to_input(uv).numpy()
        assert np.abs(seen - old).max() > 5


@pytest.mark.parametrize("frame", [*FRAMES, (480, 644), (225, 343), (301, 300)])
def test_processor_sizes_and_crop_offsets_equal_the_records(frame):
    """Exact: the resize alone gives the record's resized size (truncated long side), and a crop of
    a ramp image (each pixel its own value) starts at the record's crop offset."""
    rec = PreprocessRecord.dinov2(frame)
    top, left, bottom, right = rec.transform.pad
    resized = _bit(do_center_crop=False)(np.zeros((*frame, 3), np.uint8), return_tensors="np")["pixel_values"]
    assert resized.shape[-2:] == (224 - top - bottom, 224 - left - right)
    h, w = frame
    ramp = np.stack([*np.meshgrid(np.arange(h) % 256, np.arange(w) % 256, indexing="ij"), np.zeros((h, w))], -1)
    proc = _pil("BitImageProcessor")(do_resize=False, crop_size={"height": 96, "width": 97}, do_normalize=False)
    out = proc(ramp.astype(np.uint8), do_rescale=False, return_tensors="np")["pixel_values"][0]
    crop = PreprocessRecord.resize_crop(frame, None, (96, 97), 1)
    want_top, want_left = (-o % 256 for o in crop.pad_offset)
    assert (out[0, 0, 0], out[1, 0, 0]) == (want_top, want_left)


def test_encoder_pixels_match_the_processors_pixel_values(dinov2_dir):
    """The encoder's own resize (torch bicubic, antialiased) against the processor's (PIL bicubic on
    uint8). Measured, in [0, 1] pixel units: smooth frames max 1.1/255, mean 0.3/255; white noise mean
    <= 0.37/255, max up to 22/255 when upsampling (PIL rounds and clips to uint8 between its two passes)."""
    enc, proc = adapt_encoder(_load(dinov2_dir)), _bit()
    assert enc.resample == "bicubic" and enc.mean == pytest.approx(IMAGENET["image_mean"])
    g = torch.Generator().manual_seed(0)
    std = torch.tensor(enc.std).view(1, 3, 1, 1)
    for frame in FRAMES:
        smooth = F.interpolate(torch.rand(2, 3, 12, 16, generator=g), size=frame, mode="bicubic").clamp(0, 1)
        noise = torch.rand(1, 3, *frame, generator=g)
        for x, max_tol in ((smooth, 2 / 255), (noise, 32 / 255)):
            frames = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
            mine, rec = enc.preprocess(frames)
            ref = torch.as_tensor(proc(list(frames.numpy()), return_tensors="np")["pixel_values"])
            assert mine.shape == ref.shape == (len(x), 3, *rec.input_size)
            diff = (mine - ref).abs() * std
            assert diff.max() <= max_tol and diff.mean() <= 0.5 / 255


def test_checkpoint_processor_replaces_config_image_size(dinov2_dir):
    enc = adapt_encoder(_load(dinov2_dir))
    assert "preprocessor_config.json" in enc.source
    pixels, rec = enc.preprocess(torch.zeros(1, 480, 640, 3, dtype=torch.uint8))
    assert pixels.shape == (1, 3, 224, 224) and rec == PreprocessRecord.dinov2((480, 640))  # not 518
    assert enc.features(pixels).shape == (1, 16, 16, 32)
    same = [create_encoder("dinov2", _load(dinov2_dir), processor=p) for p in (dinov2_dir, _bit())]
    assert all(e.record((480, 640)) == rec for e in same)
    fields = json.loads((dinov2_dir / "preprocessor_config.json").read_text())
    assert create_encoder("dinov2", _load(dinov2_dir), processor=fields).record((97, 211)) == PreprocessRecord.dinov2(
        (97, 211)
    )


def test_without_a_processor_config_falls_back_and_says_so(dinov2_dir, tmp_path):
    _load(dinov2_dir).save_pretrained(tmp_path)  # the checkpoint without its processor
    with pytest.warns(UserWarning, match=r"has no preprocessor_config.json.*config.image_size=518"):
        enc = adapt_encoder(_load(tmp_path))
    assert enc.record((480, 640)) == PreprocessRecord.centre_crop((480, 640), 518, 14, 1, "dinov2")
    assert "no preprocessor_config.json" in enc.source
    moved = _load(tmp_path)
    moved.name_or_path = str(tmp_path / "moved")  # the checkpoint folder is gone (and it is no hub id)
    with pytest.warns(UserWarning, match="moved: no preprocessor_config.json"):
        adapt_encoder(moved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model built from a config, or processor=False: no checkpoint, no warning
        cfg = transformers.Dinov2Config(image_size=28, patch_size=14, **SMALL)
        assert adapt_encoder(transformers.Dinov2Model(cfg)).source.startswith("centre_crop at 28 px")
        assert adapt_encoder(_load(tmp_path), processor=False).record((40, 60)).input_size == (518, 518)
        explicit = adapt_encoder(_load(dinov2_dir), size=42, fit="pad")  # size / fit win over the processor
    assert explicit.record((40, 60)) == PreprocessRecord.pad((40, 60), 42, 14, 1, "dinov2")


def test_processor_errors_name_the_field(dinov2_dir, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        adapt_encoder(_load(dinov2_dir), size=224, processor=dinov2_dir)
    with pytest.raises(FileNotFoundError, match="has no preprocessor_config.json"):
        adapt_encoder(_load(dinov2_dir), processor=tmp_path)
    with pytest.raises(TypeError, match="processor is a int"):
        adapt_encoder(_load(dinov2_dir), processor=3)
    with pytest.raises(ValueError, match="do_pad=True"):
        processor_settings({"size": {"height": 224, "width": 224}, "do_pad": True, **IMAGENET})
    with pytest.raises(ValueError, match=r"size=\{'longest_edge': 224\}"):
        processor_settings({"size": {"longest_edge": 224}, **IMAGENET})
    with pytest.raises(ValueError, match="image_std is missing"):
        processor_settings({"size": 224, "image_mean": [0.5] * 3})


def test_processor_fields_become_the_recipe():
    """Int sizes follow the class's default_to_square; rescale folds into mean / std."""
    bit = processor_settings({"image_processor_type": "BitImageProcessor", "size": 256, "crop_size": 224, **IMAGENET})
    assert (bit["resize"], bit["crop"], bit["resample"]) == (256, (224, 224), "bilinear")
    vit = processor_settings({"size": 224, "do_rescale": False, "image_mean": 127.5, "image_std": 127.5})
    assert vit["resize"] == (224, 224) and vit["crop"] is None
    assert vit["mean"] == pytest.approx((0.5,) * 3) and vit["std"] == pytest.approx((0.5,) * 3)
    raw = processor_settings({"size": 224, "do_normalize": False, "resample": 0})
    assert raw["mean"] == (0.0,) * 3 and raw["std"] == (1.0,) * 3 and raw["resample"] == "nearest-exact"


def test_torchvision_backend_and_torchvision_transforms_match_their_centres():
    """Where torchvision is installed: transformers' torchvision backend and torchvision's own
    Resize + CenterCrop put the crop where the record's ``centre`` says (they differ at 59.5 px)."""
    tv = pytest.importorskip("torchvision.transforms.functional", exc_type=ImportError)
    cls = transformers.BitImageProcessor if hasattr(transformers.BitImageProcessor, "backend") else None
    cls = cls or transformers.BitImageProcessorFast  # transformers 4: the torchvision one is "Fast"
    proc = cls(do_resize=False, crop_size={"height": 223, "width": 224})
    for frame in [(480, 644), (225, 343), (301, 300), (5, 6)]:
        ramp = torch.stack(torch.meshgrid(torch.arange(frame[0]), torch.arange(frame[1]), indexing="ij")) + 1
        ramp = torch.cat([ramp, torch.zeros(1, *frame, dtype=ramp.dtype)]).to(torch.uint8)
        for centre, out in (
            ("transformers-torchvision", proc(ramp, do_rescale=False, do_normalize=False, return_tensors="pt")),
            ("torchvision", {"pixel_values": tv.center_crop(ramp, [223, 224])[None]}),
        ):
            rec = PreprocessRecord.resize_crop(frame, None, (223, 224), 1, centre=centre)
            x = out["pixel_values"][0].float()
            top, left = rec.pad_offset  # the canvas pixel that holds frame pixel (cut rows + 1, cut cols + 1)
            first = x[:2, max(top, 0), max(left, 0)]
            assert first.tolist() == [max(-top, 0) + 1, max(-left, 0) + 1]
