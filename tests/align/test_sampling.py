"""uv -> grid -> uv is exact for every preprocessing path; the mapping agrees with the pixels the
transform actually draws; grid_sample never hands an invalid point a border value."""

import pytest
import torch
from torch.nn import functional as F

from policylens.align._record import PreprocessRecord
from policylens.align._sampling import grid_to_uv, sample_features, uv_to_grid
from policylens.tap import ImageTransform

FRAME = (90, 130)
PATHS = {
    "resize_squash": PreprocessRecord.resize(FRAME, 56, 14, prefix_tokens=1),
    "centre_crop": PreprocessRecord.centre_crop(FRAME, 56, 14),
    "pad": PreprocessRecord.pad(FRAME, 56, 14),
    "vggt_crop": PreprocessRecord.vggt((130, 90), "crop", size=70),  # tall: cropped after the resize
    "vggt_pad": PreprocessRecord.vggt(FRAME, "pad", size=70),
    "depth_anything_3": PreprocessRecord.depth_anything_3(FRAME, size=84),
    "croco": PreprocessRecord.croco(FRAME, 512),
    "pad_top_left_flip": PreprocessRecord.of(
        ImageTransform.resize_with_pad(FRAME, (56, 56), "top_left", hflip=True), 14
    ),
    "frame_crop_flip": PreprocessRecord.of(ImageTransform(FRAME, (42, 56), crop=(10, 20, 60, 80), hflip=True), 14, 5),
    "remainder": PreprocessRecord.resize(FRAME, (60, 75), 14),  # patch embedding drops 4 rows / 5 cols
}


def _pixels(record):
    H, W = record.original_size
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([u.ravel(), v.ravel()], 1).double()


@pytest.mark.parametrize("name", PATHS)
def test_uv_round_trip_is_exact(name):
    rec = PATHS[name]
    uv = _pixels(rec) + torch.rand(1, 2, dtype=torch.float64) - 0.5  # anywhere on the pixel
    pts = uv_to_grid(uv, rec)
    assert pts.valid.any()
    assert (grid_to_uv(pts.xy, rec) - uv).abs().max() < 1e-3
    rows, cols = rec.grid_size
    assert pts.index[pts.valid].min() >= 0 and pts.index.max() < rows * cols
    assert (pts.index[~pts.valid] == -1).all()


@pytest.mark.parametrize("name", PATHS)
def test_mapping_agrees_with_the_drawn_input(name):
    """A frame whose pixels hold their own (u, v), pushed through ``transform.apply``, read at
    ``frame_to_input(uv)``, gives back uv wherever the point is valid (bilinear keeps ramps)."""
    rec = PATHS[name]
    t = rec.transform
    H, W = rec.original_size
    v, u = torch.meshgrid(torch.arange(H).double(), torch.arange(W).double(), indexing="ij")
    drawn = t.apply(torch.stack([u, v])[None].float(), fill=-100.0)[0]  # (2, h, w)
    uv = _pixels(rec)
    pts = uv_to_grid(uv, rec)
    xy = t.frame_to_input(uv)
    h, w = t.input_size
    norm = ((xy + 0.5) / torch.tensor([w, h]) * 2 - 1).float()
    read = F.grid_sample(drawn[None], norm[None, :, None], align_corners=False)[0, :, :, 0].T.double()
    sy, sx = rec.scale
    margin = 2.0 / min(sy, sx) + 1  # frame pixels off the content edge, where the resize clamps
    step = torch.tensor([margin * sx, margin * sy])
    inner = pts.valid & t.on_content(xy - step) & t.on_content(xy + step)
    frame_h, frame_w = rec.original_size
    ct, cl, ch, cw = t.crop or (0, 0, frame_h, frame_w)
    inner &= (uv[:, 0] > cl + margin) & (uv[:, 0] < cl + cw - 1 - margin)
    inner &= (uv[:, 1] > ct + margin) & (uv[:, 1] < ct + ch - 1 - margin)
    assert inner.sum() > 50
    # the antialiasing filter's discrete weights shift a ramp by a few hundredths of a pixel; a
    # mapping off by a convention (half pixel, flip, crop offset) is off by >= 0.5 px
    assert (read[inner] - uv[inner]).abs().max() < 0.1


def test_pad_bars_and_crops_are_invalid():
    pad = PATHS["pad"]  # 90 x 130 -> 38 x 55 content (rounded down), 9-row bars on top and bottom
    assert pad.transform.pad == (9, 0, 9, 1)
    top_row = uv_to_grid(torch.tensor([[65.0, 0.0], [65.0, -0.6], [65.0, 89.4], [65.0, 89.6]]), pad)
    assert top_row.valid.tolist() == [True, False, True, False]
    crop = PATHS["frame_crop_flip"]  # frame crop rows 10..69, cols 20..99
    pts = uv_to_grid(torch.tensor([[19.0, 40.0], [20.0, 40.0], [99.0, 40.0], [100.0, 40.0], [50.0, 9.0]]), crop)
    assert pts.valid.tolist() == [False, True, True, False, False]
    # flipped: the crop's left column lands in the input's last patch column
    assert pts.index[1] % crop.grid_size[1] == crop.grid_size[1] - 1
    rem = PATHS["remainder"]
    pts = uv_to_grid(torch.tensor([[129.0, 10.0], [10.0, 89.0], [10.0, 10.0]]), rem)
    assert pts.valid.tolist() == [False, False, True]  # right / bottom remainder is not on the grid


def test_grid_sample_with_validity_never_returns_border_values():
    rec = PATHS["pad"]
    rows, cols = rec.grid_size
    feats = torch.arange(rows * cols, dtype=torch.float32).reshape(1, rows, cols).repeat(3, 1, 1) + 1.0
    uv = torch.tensor([[65.0, -0.6], [65.0, 95.0], [-3.0, 40.0], [float("nan"), 3.0], [0.0, 0.0], [65.0, 45.0]])
    pts = uv_to_grid(uv, rec)
    for mode in ("bilinear", "nearest"):
        out, valid = sample_features(feats, pts, mode=mode)
        assert valid.tolist() == [False, False, False, False, True, True]
        assert (out[~valid] == 0).all()  # zero, flagged: never the nearest edge patch
        assert (out[valid] > 0).all()
    nearest, _ = sample_features(feats, pts, mode="nearest")
    assert nearest[5, 0] == feats[0].reshape(-1)[pts.index[5]]
    # a valid point on the outer quarter of the corner patch gets that patch's value, not a blend with 0
    squash = PATHS["resize_squash"]
    corner, valid = sample_features(feats, uv_to_grid(torch.tensor([[0.0, 0.0]]), squash))
    assert valid.all() and corner[0, 0] == pytest.approx(float(feats[0, 0, 0]))


def test_bilinear_matches_a_plain_reference_between_centres():
    rec = PATHS["resize_squash"]
    rows, cols = rec.grid_size
    feats = torch.randn(4, rows, cols)
    pts = uv_to_grid(torch.tensor([[40.3, 30.7], [77.0, 50.2]]), rec)
    out, _ = sample_features(feats, pts)
    for i, (gx, gy) in enumerate(pts.xy.tolist()):
        x0, y0 = int(gx // 1), int(gy // 1)
        fx, fy = gx - x0, gy - y0
        ref = (
            feats[:, y0, x0] * (1 - fx) * (1 - fy)
            + feats[:, y0, x0 + 1] * fx * (1 - fy)
            + feats[:, y0 + 1, x0] * (1 - fx) * fy
            + feats[:, y0 + 1, x0 + 1] * fx * fy
        )
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_mismatched_record_and_inputs_raise():
    pts = uv_to_grid(torch.zeros(3, 2), PATHS["pad"])
    with pytest.raises(ValueError, match=r"4x4 patch grid"):
        sample_features(torch.zeros(8, 5, 5), pts)
    with pytest.raises(ValueError, match=r"\(C, Hf, Wf\)"):
        sample_features(torch.zeros(4, 4, 8).permute(2, 0, 1)[None], pts)
    with pytest.raises(ValueError, match=r"uv must be \(N, 2\)"):
        uv_to_grid(torch.zeros(3), PATHS["pad"])
    with pytest.raises(TypeError, match="PreprocessRecord"):
        uv_to_grid(torch.zeros(3, 2), PATHS["pad"].transform)
