"""Faithfulness of attention maps: equal-area masks (checked against a brute-force shift search),
fills, the two action-change metrics on known chunks, and the masked re-runs of a tiny TinyVLA
with the same flow noise (no mask: exactly no change; other noise: a change)."""

import time

import numpy as np
import pytest
import torch

from policylens.attention._closed_loop import closed_loop_masked
from policylens.attention._faithfulness import (
    apply_fill,
    deletion_curve,
    direction_cosine,
    faithfulness,
    mask_regions,
    scale_invariant_mse,
)
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import ImageTransform


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    return TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()


def _frames(model, b=3, size=(30, 40), seed=0):
    """Raw camera frames of another size than the model input (the transform resizes them)."""
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (b, *size, 3), dtype=np.uint8) for c in model.config.cameras}
    words = ["reach the red cube", "reach the blue sphere", "put the green cube into the tray"]
    return {"images": images, "instructions": [words[i % 3] for i in range(b)], "state": rng.normal(size=(b, 7))}


def _shift(mask, dy, dx):
    """Plain reference: ``mask`` translated by (dy, dx), what leaves the image dropped (no wrap)."""
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask), strict=True):
        if 0 <= y + dy < mask.shape[0] and 0 <= x + dx < mask.shape[1]:
            out[y + dy, x + dx] = True
    return out


@pytest.mark.parametrize(("area_frac", "shape"), [(0.1, (30, 40)), (0.3, (17, 23)), (0.5, (8, 8))])
def test_masks_have_equal_area_inside_the_image_and_high_low_disjoint(area_frac, shape):
    attn = np.random.default_rng(1).random(shape)
    masks = mask_regions(attn, area_frac, n_random=5, rng=0)
    area = round(area_frac * attn.size)
    assert sorted(masks) == sorted(["high", "low", "shifted", "whole", *[f"random_{i}" for i in range(5)]])
    for name, m in masks.items():
        assert m.shape == shape and m.dtype == bool
        assert m.sum() == (attn.size if name == "whole" else area), name
    assert not (masks["high"] & masks["low"]).any()
    assert attn[masks["high"]].min() >= attn[~masks["high"]].max()
    assert attn[masks["low"]].max() <= attn[~masks["low"]].min()


def test_high_and_low_of_a_constant_map_are_still_disjoint():
    masks = mask_regions(np.ones((10, 10)), 0.5, n_random=0, rng=0)
    assert masks["high"].sum() == masks["low"].sum() == 50 and not (masks["high"] & masks["low"]).any()


def test_shifted_is_high_translated_inside_the_image_with_least_overlap():
    attn = np.zeros((20, 24))
    attn[3:8, 5:11] = 1.0  # a compact high region of 30 pixels
    attn += np.random.default_rng(0).random(attn.shape) * 1e-3
    masks = mask_regions(attn, 30 / attn.size, n_random=0, rng=3)
    high, shifted = masks["high"], masks["shifted"]
    H, W = high.shape
    valid = {}  # brute force: every offset that keeps all of high inside, with its overlap
    for dy in range(-H + 1, H):
        for dx in range(-W + 1, W):
            moved = _shift(high, dy, dx)
            if moved.sum() == high.sum():
                valid[(dy, dx)] = int((moved & high).sum())
    matches = [d for d in valid if (_shift(high, *d) == shifted).all()]
    assert len(matches) == 1 and valid[matches[0]] == min(valid.values()) == 0
    assert shifted.sum() == high.sum()


def test_shifted_stays_put_when_high_spans_the_frame():
    attn = np.zeros((6, 6))
    attn[0, 0] = attn[5, 5] = 1.0
    masks = mask_regions(attn, 2 / 36, n_random=0, rng=0)
    assert (masks["shifted"] == masks["high"]).all()


def test_fills_change_only_the_mask():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[4:12, 10:30] = True
    for fill in ("blur", "mean", "noise"):
        out = apply_fill(frame, mask, fill, rng=1)
        assert out.dtype == np.uint8 and (out[~mask] == frame[~mask]).all()
        assert (out[mask] != frame[mask]).any()
    mean = apply_fill(frame, mask, "mean")
    assert (mean[mask] == np.round(frame.reshape(-1, 3).mean(0)).astype(np.uint8)).all()
    blurred = apply_fill(frame, mask, "blur").astype(float)
    assert blurred[mask].std() < frame[mask].astype(float).std() / 3  # strong blur flattens noise
    with pytest.raises(ValueError, match=r"fill='smudge' is unknown; choose from \['blur', 'mean', 'noise'\]"):
        apply_fill(frame, mask, "smudge")
    with pytest.raises(ValueError, match="mask must be bool"):
        apply_fill(frame, mask[:10], "mean")


def test_metrics_on_known_chunks():
    a = np.random.default_rng(0).normal(size=(8, 7))
    assert scale_invariant_mse(a, 2 * a) == 0.0
    assert scale_invariant_mse(a, a) == 0.0
    assert scale_invariant_mse(a, -a) == pytest.approx((a**2).mean())  # reversed: as large as b = 0
    assert scale_invariant_mse(a, np.zeros_like(a)) == pytest.approx((a**2).mean())
    assert direction_cosine(a, -a) == -1.0
    assert direction_cosine(a, 3 * a) == pytest.approx(1.0, abs=1e-12)
    b = a.copy()
    b[:, 3:] = 0  # the cosine reads xyz only
    assert direction_cosine(a, b) == 1.0
    assert np.isnan(direction_cosine(np.zeros_like(a), a))
    batched = scale_invariant_mse(np.stack([a, a]), np.stack([a, -a]))
    assert batched.shape == (2,) and batched[0] == 0 and batched[1] > 0
    with pytest.raises(ValueError, match=r"one shape \(\.\.\., T, D\)"):
        scale_invariant_mse(a, a[:4])


def test_same_noise_gives_no_change_and_other_noise_a_change(vla):
    frames = _frames(vla)
    t0 = time.perf_counter()
    res = faithfulness(vla, frames, layer=1, camera_set=("all", "hand_camera"), n_random=3, seed=0)
    print(f"faithfulness, 3 keyframes, 2 views x 2 fills x 7 masks: {time.perf_counter() - t0:.2f}s")
    assert (res.repeat["si_mse"] == 0).all() and (res.repeat["cosine"] == 1).all()
    assert (res.noise_floor["si_mse"] > 0).all()
    for view in ("all", "hand_camera"):
        for fill in ("blur", "mean"):
            for cond in ("high", "low", "random_0", "random_2", "random", "shifted", "whole"):
                change = res.changes[(view, fill, cond)]
                assert change["si_mse"].shape == change["cosine"].shape == (3,)
                assert np.isfinite(change["si_mse"]).all() and (change["si_mse"] >= 0).all()
            assert (res.changes[(view, fill, "whole")]["si_mse"] > 0).all()
    mean = np.mean([res.changes[("all", "blur", f"random_{i}")]["si_mse"] for i in range(3)], 0)
    np.testing.assert_allclose(res.changes[("all", "blur", "random")]["si_mse"], mean)
    assert res.area == dict.fromkeys(vla.config.cameras, 120)  # round(0.1 * 30 * 40)
    for overlap in res.shifted_overlap.values():
        assert overlap.shape == (3,) and ((overlap >= 0) & (overlap <= 1)).all()


def test_one_camera_view_masks_only_that_camera(vla, monkeypatch):
    frames = _frames(vla, b=2)
    seen, make_batch = [], vla.make_batch
    monkeypatch.setattr(vla, "make_batch", lambda images, *a: seen.append(images) or make_batch(images, *a))
    faithfulness(vla, frames, layer=0, camera_set=("hand_camera",), fills=("mean",), n_random=1)
    changed = {c: sum(not np.array_equal(s[c].numpy(), frames["images"][c]) for s in seen) for c in vla.config.cameras}
    assert changed == {"varied_camera_1": 0, "hand_camera": 5}  # high, low, random_0, shifted, whole


def test_faithfulness_names_bad_arguments(vla):
    frames = _frames(vla, b=1)
    with pytest.raises(ValueError, match=r"camera_set \['wrist'\] must name 'all' or cameras from"):
        faithfulness(vla, frames, layer=0, camera_set=("wrist",), n_random=0)
    with pytest.raises(ValueError, match=r"fills \['smudge'\] not in"):
        faithfulness(vla, frames, layer=0, fills=("smudge",))
    with pytest.raises(ValueError, match=r"the frames lack \['state'\]"):
        faithfulness(vla, {"images": frames["images"], "instructions": ["x"]}, layer=0)
    with pytest.raises(ValueError, match="origin=.sideways. must be one of"):
        faithfulness(vla, frames, layer=0, origin="sideways")


def test_deletion_curve_starts_at_zero_and_ends_where_both_orders_meet(vla):
    frames = _frames(vla, b=2)
    images = {c: torch.from_numpy(v) for c, v in frames["images"].items()}
    batch = vla.make_batch(images, frames["instructions"], torch.as_tensor(frames["state"], dtype=torch.float32))
    from policylens.attention import extract_attention

    maps = extract_attention(vla, batch, [1], ["prefix"])[("prefix", 1)].maps
    grid = {c: m.mean(1) for c, m in maps.items()}  # (B, 2, 2)
    most = deletion_curve(vla, frames, grid, order="most", steps=4)
    least = deletion_curve(vla, frames, grid, order="least", steps=4)
    for curve in (most, least):
        assert curve.fraction.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
        assert curve.si_mse.shape == curve.cosine.shape == (2, 5) and curve.auc.shape == (2,)
        assert (curve.si_mse[:, 0] == 0).all() and (curve.cosine[:, 0] == 1).all()
        np.testing.assert_allclose(curve.auc, [np.trapezoid(s, curve.fraction) for s in curve.si_mse])
    np.testing.assert_array_equal(most.si_mse[:, -1], least.si_mse[:, -1])  # everything removed either way
    with pytest.raises(ValueError, match=r"expected \(B=2, rows, cols\)"):
        deletion_curve(vla, frames, dict(maps))  # heads not averaged


def test_deletion_removes_only_pixels_the_model_sees(vla, monkeypatch):
    frames = _frames(vla, b=1)
    crop = ImageTransform.resize((30, 40), (28, 28), crop=(2, 4, 24, 30))  # the model sees rows 2:26, cols 4:34
    monkeypatch.setattr(vla, "image_transform", lambda size: crop)
    seen, make_batch = [], vla.make_batch
    monkeypatch.setattr(vla, "make_batch", lambda images, *a: seen.append(images) or make_batch(images, *a))
    grid = {c: torch.rand(1, 2, 2, generator=torch.Generator().manual_seed(0)) for c in vla.config.cameras}
    deletion_curve(vla, frames, grid, steps=2)
    outside = np.ones((30, 40), bool)
    outside[2:26, 4:34] = False
    for c in vla.config.cameras:
        assert all(np.array_equal(s[c].numpy()[0][outside], frames["images"][c][0][outside]) for s in seen)
        assert not np.array_equal(seen[-1][c].numpy()[0], frames["images"][c][0])  # all patches gone at f = 1


def test_closed_loop_masked_runs_a_short_episode(vla):
    t0 = time.perf_counter()
    res = closed_loop_masked(vla, "reach", episodes=1, condition="high", layer=1, max_steps=8)
    print(f"closed loop, 8 steps at 28 px: {time.perf_counter() - t0:.2f}s")
    assert res.n == 1 and res.episode_length == [8]
    lo, hi = res.interval
    assert 0 <= lo <= res.success_rate <= hi <= 1
    with pytest.raises(ValueError, match=r"condition='top'.*choose from"):
        closed_loop_masked(vla, condition="top")
