"""PreprocessRecord: every recipe against a plain re-statement of the encoder's own resizing code,
the fields a point lookup reads, the JSON round trip and clear errors."""

import math

import pytest
import torch

from policylens.align._record import CENTRES, PreprocessRecord, round_to_multiple
from policylens.tap import ImageTransform, PatchGrid


def _vggt_reference(fh, fw, mode, size=518):
    """VGGT's load_and_preprocess_images, sizes only: (resized (h, w), input (h, w), top-left offset)."""
    if mode == "pad":
        if fw >= fh:
            nw, nh = size, round(fh * (size / fw) / 14) * 14
        else:
            nh, nw = size, round(fw * (size / fh) / 14) * 14
        return (nh, nw), (size, size), ((size - nh) // 2, (size - nw) // 2)
    nw, nh = size, round(fh * (size / fw) / 14) * 14
    if nh > size:
        return (nh, nw), (size, nw), (-((nh - size) // 2), 0)
    return (nh, nw), (nh, nw), (0, 0)


@pytest.mark.parametrize("frame", [(480, 640), (640, 480), (300, 300), (720, 1280), (112, 70), (50, 148)])
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_vggt_matches_reference_sizes(frame, mode):
    rec = PreprocessRecord.vggt(frame, mode)
    (rh, rw), inp, off = _vggt_reference(*frame, mode)
    assert rec.input_size == inp and rec.pad_offset == off
    top, left, bottom, right = rec.transform.pad
    assert (inp[0] - top - bottom, inp[1] - left - right) == (rh, rw)  # the resized size
    assert rec.patch_size == 14 and rec.grid_size == (inp[0] // 14, inp[1] // 14) and rec.prefix_tokens == 5
    assert rh % 14 == 0 and rw % 14 == 0


def _dust3r_reference(fh, fw, size):
    """DUSt3R load_images, sizes only: resized (h, w) and the crop box (top, left, h, w) in it."""
    long = round(size * max(fw / fh, fh / fw)) if size == 224 else size
    s = max(fh, fw)
    rw, rh = (round(x * long / s) for x in (fw, fh))
    cx, cy = rw // 2, rh // 2
    if size == 224:
        half = min(cx, cy)
        return (rh, rw), (cy - half, cx - half, 2 * half, 2 * half)
    halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
    if rw == rh:  # square_ok=False
        halfh = 3 * halfw / 4
    return (rh, rw), (cy - halfh, cx - halfw, 2 * halfh, 2 * halfw)


@pytest.mark.parametrize("frame", [(480, 640), (375, 500), (224, 224), (112, 70)])
@pytest.mark.parametrize("size", [224, 512])
def test_croco_matches_reference_crop(frame, size):
    rec = PreprocessRecord.croco(frame, size)
    (rh, rw), (top, left, h, w) = _dust3r_reference(*frame, size)
    assert rec.input_size == (h, w) and rec.pad_offset == (-top, -left)
    assert rec.grid_size == (h // 16, w // 16) and h % 16 == 0 and w % 16 == 0
    assert rec.scale == pytest.approx((rh / frame[0], rw / frame[1]))


def test_depth_anything_3_rounds_each_side_to_14_and_squashes():
    rec = PreprocessRecord.depth_anything_3((420, 640))  # 420 * 504 / 640 = 330.75 -> 336
    assert rec.input_size == (336, 504) and rec.grid_size == (24, 36) and rec.pad_offset == (0, 0)
    sy, sx = rec.scale
    assert sy != sx and abs(sy / sx - 1) < 0.02  # a slight aspect squash, recorded per axis
    assert round_to_multiple(377.9, 14) == 378 and round_to_multiple(3, 14) == 14


def test_centre_crop_and_pad_offsets():
    crop = PreprocessRecord.centre_crop((480, 640), 224, 14, prefix_tokens=1)
    # 640 * 224 / 480 = 298.67 is truncated to 298 (transformers, torchvision), not rounded to 299
    assert crop.input_size == (224, 224) and crop.pad_offset == (0, -37) and crop.scale == (224 / 480, 298 / 640)
    pad = PreprocessRecord.pad((480, 640), 224, 14)
    assert pad.transform.pad == (28, 0, 28, 0) and pad.pad_offset == (28, 0)


def _resize_crop_reference(fh, fw, resize, crop_h, crop_w, centre):
    """Sizes and offsets as the libraries compute them, restated: transformers'
    get_resize_output_image_size / torchvision's _compute_resized_output_size (short side to ``resize``,
    long side int()-truncated), then where each centre crop puts the resized image on its canvas:
    numpy center_crop (transformers' PIL backend), transformers' torchvision backend, torchvision
    CenterCrop. Returns (resized (h, w), (top, left) of the resized image on the crop canvas)."""
    if resize is None:
        rh, rw = fh, fw
    elif fw <= fh:
        rh, rw = int(resize * fh / fw), resize
    else:
        rh, rw = resize, int(resize * fw / fh)
    offsets = []
    for r, c in ((rh, crop_h), (rw, crop_w)):
        if c <= r:  # crop: rows / cols [top, top + c) are kept
            if centre == "torchvision":
                top = round((r - c) / 2.0)  # torchvision: int(round(...)), ties to even
            elif centre == "transformers-torchvision":
                top = int((r - c) / 2.0)
            else:
                top = (r - c) // 2
            offsets.append(-top)
        elif centre == "transformers":  # pad: numpy zero canvas, image placed at ceil
            offsets.append(math.ceil((c - r) / 2))
        else:  # tvF.pad with (c - r) // 2 before
            offsets.append((c - r) // 2)
    return (rh, rw), tuple(offsets)


FRAMES = [(480, 640), (640, 480), (300, 301), (301, 300), (224, 224), (480, 644), (225, 343), (97, 211), (721, 1280)]


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("centre", CENTRES)
@pytest.mark.parametrize(("resize", "crop"), [(256, 224), (224, 224), (256, (223, 225)), (None, 200), (256, None)])
def test_resize_crop_matches_the_libraries(frame, centre, resize, crop):
    rec = PreprocessRecord.resize_crop(frame, resize, crop, 14, 1, "x", centre)
    ch, cw = (crop, crop) if isinstance(crop, int) else crop or (None, None)
    (rh, rw), off = _resize_crop_reference(*frame, resize, ch or 0, cw or 0, centre)
    if crop is None:
        ch, cw, off = rh, rw, (0, 0)
    top, left, bottom, right = rec.transform.pad
    assert rec.input_size == (ch, cw) and rec.pad_offset == off
    assert (ch - top - bottom, cw - left - right) == (rh, rw)  # the resized size
    assert rec.grid_size == (ch // 14, cw // 14) and rec.scale == (rh / frame[0], rw / frame[1])


def test_named_recipes_are_the_processors_sizes():
    # 640 x 480 -> short side 256, long int(341.33) = 341, crop 224 at ((256 - 224) // 2, (341 - 224) // 2)
    dino = PreprocessRecord.dinov2((480, 640))
    assert dino.input_size == (224, 224) and dino.pad_offset == (-16, -58) and dino.scale == (256 / 480, 341 / 640)
    assert dino.grid_size == (16, 16) and dino.prefix_tokens == 1 and dino.encoder == "dinov2"
    # 300 x 301 -> 256 x int(256.85) = 256 (rounding would give 257 and a different crop)
    assert PreprocessRecord.dinov2((300, 301)).scale == (256 / 300, 256 / 301)
    # an odd margin: 480 x 644 -> 256 x 343; transformers cuts 119 // 2 = 59, torchvision round(59.5) = 60
    assert PreprocessRecord.dinov2((480, 644)).pad_offset == (-16, -59)
    assert PreprocessRecord.dinov2((480, 644), centre="torchvision").pad_offset == (-16, -60)
    # timm: floor(224 / 0.875) = 256, floor(224 / 0.9) = 248, then CenterCrop(224) with torchvision rounding
    for pct, scale in ((0.875, 256), (0.9, 248), (1.0, 224)):
        rec = PreprocessRecord.timm_eval((480, 644), 224, 16, pct)
        (rh, rw), off = _resize_crop_reference(480, 644, scale, 224, 224, "torchvision")
        assert rec.scale == (rh / 480, rw / 644) and rec.pad_offset == off and rec.grid_size == (14, 14)
    assert PreprocessRecord.timm_eval((480, 644), 224, 16, 0.9).pad_offset == (-12, -(332 - 224) // 2)


def test_resize_crop_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"centre='middle' is unknown; choose from \['transformers'"):
        PreprocessRecord.resize_crop((480, 640), 256, 224, 14, centre="middle")
    with pytest.raises(ValueError, match="resize=0"):
        PreprocessRecord.resize_crop((480, 640), 0, 224, 14)
    with pytest.raises(ValueError, match="crop=-1"):
        PreprocessRecord.resize_crop((480, 640), 256, (-1, 224), 14)
    with pytest.raises(ValueError, match="crop_pct=0"):
        PreprocessRecord.timm_eval((480, 640), crop_pct=0)


@pytest.mark.parametrize(
    "rec",
    [
        PreprocessRecord.dinov2((480, 644)),
        PreprocessRecord.resize_crop((5, 6), None, (8, 9), 1),
        PreprocessRecord.vggt((480, 640), "crop"),
        PreprocessRecord.croco((375, 500), 512),
        PreprocessRecord.of(ImageTransform((100, 120), (56, 70), crop=(5, 10, 80, 100), hflip=True), 14, 2, "x"),
    ],
)
def test_json_round_trip(rec):
    back = PreprocessRecord.from_json(rec.to_json())
    assert back == rec
    assert back.crop_offset == rec.crop_offset and back.original_size == rec.original_size


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="does not fit the 56x56 input"):
        PreprocessRecord(ImageTransform((100, 100), (56, 56)), PatchGrid(5, 4), 14)
    bad = PreprocessRecord.vggt((480, 640)).to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="version=99"):
        PreprocessRecord.from_dict(bad)
    with pytest.raises(ValueError, match="mode='squash'"):
        PreprocessRecord.vggt((480, 640), "squash")


def test_apply_draws_the_recorded_crop_and_bars():
    """Content lands exactly where the record says: bars hold the fill, a crop keeps the centre."""
    frame = torch.full((1, 1, 48, 64), 0.5)
    pad = PreprocessRecord.vggt((48, 64), "pad", size=56)
    x = pad.transform.apply(frame, fill=1.0)[0, 0]
    top, _, bottom, _ = pad.transform.pad
    assert x.shape == (56, 56) and (x[:top] == 1).all() and (x[56 - bottom :] == 1).all()
    assert torch.allclose(x[top : 56 - bottom], torch.tensor(0.5))
    with pytest.raises(ValueError, match="frame_size"):
        pad.transform.apply(torch.zeros(1, 1, 10, 10))
