"""Overlap metrics, Otsu, equal-area blobs, mask readers and resizing, on maps with known answers."""

from collections import deque

import numpy as np
import pytest
import torch
from PIL import Image

from policylens.attention._overlap import (
    mask_from_coco_rle,
    mask_from_png,
    otsu_threshold,
    overlap_metrics,
    random_blobs,
    resize_to,
)


def _box(shape=(10, 12), rows=slice(2, 5), cols=slice(3, 9)):
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m  # 18 of 120 pixels


def test_uniform_map_scores_the_area():
    m = _box()
    r = overlap_metrics(np.ones(m.shape), m)
    assert r["mass"] == r["area"] == 18 / 120
    assert r["ratio"] == 1.0 and r["concentration"] == 1.0
    assert np.isnan(r["iou_otsu"])  # a constant map has no threshold
    assert r["background"] == pytest.approx(1 - 18 / 120)
    r = overlap_metrics(np.full(m.shape, 0.37), m)  # any constant: equal up to rounding
    assert r["mass"] == pytest.approx(r["area"], abs=1e-15) and r["concentration"] == pytest.approx(1.0)


def test_map_equal_to_mask_is_perfect():
    m = _box()
    r = overlap_metrics(m.astype(float), m, top_k=m.mean())
    assert r["mass"] == 1.0 and r["pointing"] == 1.0 and r["iou_topk"] == 1.0 and r["iou_otsu"] == 1.0
    assert r["concentration"] == float("inf") and r["background"] == 0.0
    assert overlap_metrics(m.astype(float), m, top_k="area")["iou_topk"] == 1.0


def test_metrics_match_a_hand_computed_map():
    attn = np.array([[4.0, 1.0], [3.0, 2.0]])  # sum 10
    m = np.array([[True, False], [False, False]])
    r = overlap_metrics(attn, m, top_k=0.5)
    assert r["mass"] == pytest.approx(0.4) and r["area"] == 0.25 and r["ratio"] == pytest.approx(1.6)
    assert r["concentration"] == pytest.approx(0.4 * 0.75 / (0.25 * 0.6))  # = 2
    assert r["pointing"] == 1.0
    assert r["iou_topk"] == pytest.approx(0.5)  # top 2 = {4, 3}; intersection 1, union 2


def test_pointing_takes_the_first_max_and_edge_cases():
    attn = np.zeros((3, 3))
    attn[0, 2] = attn[2, 0] = 1.0  # tie: row-major first is (0, 2)
    inside_second = np.zeros((3, 3), dtype=bool)
    inside_second[2, 0] = True
    r = overlap_metrics(attn, inside_second)
    assert r["pointing"] == 0.0 and r["concentration"] == pytest.approx(8.0)  # E = 1/2, A = 1/9: (1/1) / (1/8)
    empty = overlap_metrics(attn, np.zeros((3, 3), dtype=bool))
    assert np.isnan(empty["ratio"]) and np.isnan(empty["concentration"]) and empty["mass"] == 0.0
    full = overlap_metrics(attn, np.ones((3, 3), dtype=bool))
    assert np.isnan(full["concentration"]) and full["ratio"] == 1.0
    miss = overlap_metrics(attn, _box((3, 3), slice(1, 2), slice(1, 2)))
    assert miss["concentration"] == 0.0


def test_background_uses_the_union_of_objects():
    attn = np.arange(1.0, 13.0).reshape(3, 4)  # sum 78
    cup, plate = np.zeros((3, 4), dtype=bool), np.zeros((3, 4), dtype=bool)
    cup[0, 0], plate[2, 3] = True, True
    r = overlap_metrics(attn, cup, objects_union=cup | plate)
    assert r["background"] == pytest.approx((78 - 1 - 12) / 78)
    with pytest.raises(ValueError, match=r"objects_union must contain mask.*objects_union \| mask"):
        overlap_metrics(attn, cup, objects_union=plate)


def test_torch_inputs_and_input_errors():
    m = _box()
    r = overlap_metrics(torch.ones(m.shape, dtype=torch.bfloat16), torch.from_numpy(m))
    assert r["mass"] == r["area"]
    with pytest.raises(ValueError, match=r"attn must be a 2-D"):
        overlap_metrics(np.ones((2, *m.shape)), m)
    with pytest.raises(ValueError, match=r"non-negative.*min -1"):
        overlap_metrics(-np.ones(m.shape), m)
    with pytest.raises(ValueError, match=r"mask has shape \(5, 5\).*resize_to"):
        overlap_metrics(np.ones(m.shape), np.ones((5, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"top_k must be .*got 0"):
        overlap_metrics(np.ones(m.shape), m, top_k=0)
    with pytest.raises(ValueError, match=r"mask must be boolean"):
        overlap_metrics(np.ones(m.shape), m * 2)


def test_otsu_splits_a_bimodal_map_at_the_modes():
    rng = np.random.default_rng(0)
    m = _box((40, 40), slice(5, 20), slice(10, 30))
    attn = np.where(m, 0.8, 0.1) + rng.normal(0, 0.03, m.shape)
    t = otsu_threshold(attn)
    assert attn[~m].max() < t <= attn[m].min()  # any edge in the empty gap splits the same; the first is taken
    assert overlap_metrics(attn.clip(0), m)["iou_otsu"] == 1.0


def test_otsu_matches_a_brute_force_reference_on_integer_levels():
    rng = np.random.default_rng(1)
    v = rng.integers(0, 256, size=500).astype(float)
    v[:2] = 0, 255  # histogram edges fall on the integers, so bins hold single levels

    def within(t):
        lo, hi = v[v < t], v[v >= t]
        return lo.size * lo.var() + hi.size * hi.var()

    candidates = np.unique(v)[1:]  # every split between occupied levels
    best = min(within(t) for t in candidates)
    assert within(otsu_threshold(v)) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize(("shape", "area"), [((20, 30), 50), ((8, 8), 64), ((16, 16), 1), ((5, 40), 37)])
def test_random_blobs_have_the_area_and_are_connected(shape, area):
    blobs = random_blobs(shape, area, n=6, rng=3)
    assert blobs.shape == (6, *shape) and blobs.dtype == bool
    for b in blobs:
        assert b.sum() == area
        assert _connected(b)
    assert not np.array_equal(random_blobs((20, 30), 50, 1, rng=1), random_blobs((20, 30), 50, 1, rng=2))


def test_random_blobs_errors():
    with pytest.raises(ValueError, match=r"area must be a pixel count in \[1, 16\].*got 17"):
        random_blobs((4, 4), 17, 2)


def _connected(b):
    seen, todo = set(), deque([tuple(np.argwhere(b)[0])])
    while todo:
        y, x = todo.popleft()
        if (y, x) in seen or not (0 <= y < b.shape[0] and 0 <= x < b.shape[1]) or not b[y, x]:
            continue
        seen.add((y, x))
        todo.extend([(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)])
    return len(seen) == b.sum()


def _encode(mask, compress):
    """A plain COCO RLE encoder (column-major runs from 0s; pycocotools' rleToString when compress)."""
    flat = mask.ravel(order="F").astype(int)
    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    counts = np.diff(np.r_[0, change]).tolist()
    if not compress:
        return counts
    s = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            s.append(chr((ch | 0x20 if more else ch) + 48))
    return "".join(s)


@pytest.mark.parametrize("compress", [False, True])
def test_rle_round_trip(compress):
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (30, 41), (1, 1)]:
        mask = rng.random(shape) < 0.3
        mask[: shape[0] // 2, : shape[1] // 3] = True  # long runs, negative and positive deltas
        counts = _encode(mask, compress)
        rle = {"size": list(shape), "counts": counts.encode() if compress and shape == (30, 41) else counts}
        np.testing.assert_array_equal(mask_from_coco_rle(rle), mask)


def test_rle_known_string_and_column_major_order():
    # counts [100, 5, 2, 3] by hand: 100 = "T3" (4 | more, then 3), "5", "2", then 3 - counts[1] = -2 = "N"
    m = mask_from_coco_rle({"size": [5, 22], "counts": "T352N"})
    assert m[:, :20].sum() == 0 and m[:, 20].all()  # pixels 100..104: column 20
    assert m[:, 21].tolist() == [False, False, True, True, True]  # pixels 107..109
    m = mask_from_coco_rle({"size": [2, 3], "counts": [1, 2, 3]})  # column-major: (1,0) and (0,1) set
    assert m.tolist() == [[False, True, False], [True, False, False]]
    with pytest.raises(ValueError, match=r"sum to h\*w = 6.*got sum 5"):
        mask_from_coco_rle({"size": [2, 3], "counts": [1, 2, 2]})


def test_mask_from_png(tmp_path):
    label = np.zeros((6, 9), dtype=np.uint8)
    label[1:3, 2:5], label[4, 7] = 3, 5
    Image.fromarray(label).save(tmp_path / "label.png")
    np.testing.assert_array_equal(mask_from_png(tmp_path / "label.png"), label > 0)
    np.testing.assert_array_equal(mask_from_png(tmp_path / "label.png", label=5), label == 5)
    rgba = np.zeros((6, 9, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha is ignored
    rgba[2, 2, 0] = 200
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert mask_from_png(tmp_path / "rgba.png").sum() == 1
    with pytest.raises(FileNotFoundError, match="is not a file"):
        mask_from_png(tmp_path / "missing.png")


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [(16, 16), (30, 45), (4, 4)])
def test_resize_keeps_mass(mode, size):
    grid = np.random.default_rng(0).random((2, 4, 4))  # (batch, h, w)
    out = resize_to(grid, size, mode)
    assert out.shape == (2, *size)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), grid.sum(axis=(1, 2)), rtol=1e-12)


def test_resize_nearest_spreads_each_patch_over_its_pixels():
    grid = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = resize_to(grid, (4, 6), "nearest")
    np.testing.assert_allclose(out[:2, :3], 1 / 6)
    np.testing.assert_allclose(out[2:, 3:].sum(), 4.0)


def test_resize_bilinear_matches_torch_up_to_the_mass_rescale():
    grid = torch.rand(3, 5, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(grid[None, None], size=(12, 20), mode="bilinear", align_corners=False)[0, 0]
    out = resize_to(grid, (12, 20), "bilinear")
    np.testing.assert_allclose(
        out / out.sum(), (ref / ref.sum()).numpy(), rtol=1e-6
    )  # torch computes the scale in float32


def test_resize_errors():
    with pytest.raises(ValueError, match=r"mode must be one of \('nearest', 'bilinear'\), got 'cubic'"):
        resize_to(np.ones((2, 2)), (4, 4), "cubic")
    with pytest.raises(ValueError, match="only upsamples"):
        resize_to(np.ones((8, 8)), (4, 4))
