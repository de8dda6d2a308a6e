"""Ablation conditions change only what they name: that camera's pixels (the other cameras and the
instruction bit-identical), or the instruction only; fills checked against per-pixel references."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from policylens.attention import apply_condition, conditions_for, parse_conditions
from policylens.attention._ablate_conditions import Condition, other_object_instruction, shuffle_words

CAMS = ("side", "wrist", "top")


def _inputs(n=2, seed=0):
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8) for c in CAMS}
    return images, ["reach the red cube", "reach the blue sphere"][:n]


@pytest.mark.parametrize("cond", [c for c in conditions_for(CAMS) if c.target in CAMS], ids=lambda c: c.name)
def test_a_camera_condition_changes_only_that_cameras_pixels(cond):
    images, texts = _inputs()
    kept = {c: v.copy() for c, v in images.items()}
    later = {c: np.full_like(v, 7) for c, v in images.items()}
    out = apply_condition(cond, images, texts, rng=0, other_time=later)
    assert out.texts == texts
    for c in CAMS:
        assert np.array_equal(images[c], kept[c])  # the caller's arrays are never written
        if c != cond.target:
            assert out.images[c] is images[c] or np.array_equal(out.images[c], kept[c])
    changed = not np.array_equal(out.images[cond.target], kept[cond.target])
    assert changed == (cond.kind != "removed")
    assert out.removed == ((cond.target,) if cond.kind == "removed" else ())
    assert out.images[cond.target].dtype == np.uint8 and out.images[cond.target].shape == kept[cond.target].shape


def test_fills_against_per_pixel_references():
    images, texts = _inputs(n=1)
    frame = images["wrist"][0].astype(np.float64)
    black = apply_condition(Condition("wrist", "black"), images, texts).images["wrist"][0]
    assert (black == 0).all()
    mean = apply_condition(Condition("wrist", "mean"), images, texts).images["wrist"][0]
    for ch in range(3):  # every pixel is the channel's mean, rounded
        want = round(sum(frame[y, x, ch] for y in range(12) for x in range(16)) / (12 * 16))
        assert (mean[..., ch] == want).all()
    blur = apply_condition(Condition("wrist", "blur"), images, texts).images["wrist"][0]
    ref = np.asarray(Image.fromarray(images["wrist"][0]).filter(ImageFilter.GaussianBlur(max(1.0, 12 / 16))))
    assert np.array_equal(blur, ref)
    big = {c: np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8) for c in CAMS}
    noise = apply_condition(Condition("wrist", "noise"), big, texts, rng=3).images["wrist"][0].astype(np.float64)
    src = big["wrist"][0].astype(np.float64)
    assert np.abs(noise.mean((0, 1)) - src.mean((0, 1))).max() < 6  # the moments stay, the content goes
    assert np.abs(noise.std((0, 1)) - src.std((0, 1))).max() < 8
    assert abs(np.corrcoef(noise[..., 0].ravel(), src[..., 0].ravel())[0, 1]) < 0.1


def test_cameras_conditions_and_swap():
    images, texts = _inputs()
    out = apply_condition(Condition("cameras", "swap"), images, texts)
    for cam, shown in zip(CAMS, CAMS[1:] + CAMS[:1], strict=True):  # each camera shows the next one's frame
        assert np.array_equal(out.images[cam], images[shown])
    two = {c: images[c] for c in CAMS[:2]}
    out = apply_condition(Condition("cameras", "swap"), two, texts)
    assert np.array_equal(out.images["side"], two["wrist"]) and np.array_equal(out.images["wrist"], two["side"])
    out = apply_condition(Condition("cameras", "black"), images, texts)
    assert all((v == 0).all() for v in out.images.values()) and out.texts == texts
    assert apply_condition(Condition("cameras", "removed"), images, texts).removed == CAMS
    with pytest.raises(ValueError, match="two cameras"):
        apply_condition(Condition("cameras", "swap"), {"side": images["side"]}, texts)


@pytest.mark.parametrize("kind", ["empty", "other", "shuffled"])
def test_an_instruction_condition_changes_only_the_instruction(kind):
    images, texts = _inputs()
    out = apply_condition(Condition("instruction", kind), images, texts, rng=0, other_texts=["a", "b"])
    assert all(out.images[c] is images[c] for c in CAMS) and out.removed == ()
    assert out.texts != texts and len(out.texts) == len(texts)
    if kind == "shuffled":
        assert [sorted(t.split()) for t in out.texts] == [sorted(t.split()) for t in texts]


def test_instruction_helpers():
    rng = np.random.default_rng(0)
    assert shuffle_words("go", rng) == "go" and shuffle_words("a a a", rng) == "a a a"
    for _ in range(20):
        assert shuffle_words("reach the red cube", rng) != "reach the red cube"
    names = ["red cube", "blue ball", "green cone"]
    assert other_object_instruction("reach the blue ball", "blue ball", names) == "reach the green cone"
    assert other_object_instruction("reach the green cone", "green cone", names) == "reach the red cube"
    assert other_object_instruction("reach it", "blue ball", names) is None
    assert other_object_instruction("reach the red cube", "red cube", ["red cube"]) is None


def test_parse_conditions_and_errors():
    every = parse_conditions(None, CAMS)
    assert len(every) == 3 * 6 + 3 + 3 and parse_conditions("all", CAMS) == every
    assert [c.name for c in parse_conditions("black", CAMS[:2])] == ["side:black", "wrist:black", "cameras:black"]
    assert [c.name for c in parse_conditions("instruction,side:blur", CAMS)] == [
        "instruction:empty", "instruction:other", "instruction:shuffled", "side:blur",
    ]  # fmt: skip
    assert "cameras:swap" not in [c.name for c in parse_conditions(None, ["side"])]
    with pytest.raises(ValueError, match=r"'side:purple' names no condition .* choose from"):
        parse_conditions("side:purple", CAMS)
    with pytest.raises(ValueError, match="other_texts"):
        apply_condition(Condition("instruction", "other"), *_inputs())
    with pytest.raises(ValueError, match=r"other_time\['side'\]"):
        apply_condition(Condition("side", "time"), *_inputs())
