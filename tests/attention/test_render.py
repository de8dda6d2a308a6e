"""Rendering of attention maps: normalisation, overlay colours and positions, grids, head choice."""

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from PIL import Image

from policylens.attention._render import (
    _GAP,
    head_grid,
    layer_strip,
    most_active_head,
    normalize_map,
    overlay,
    save_image,
)

RNG = np.random.default_rng(0)


def _blend(frame, value, alpha=0.5, cmap="jet"):
    """Reference: the frame blended with the colour of one normalised value, in float."""
    colour = np.asarray(matplotlib.colormaps[cmap](value))[..., :3] * 255.0
    return (1 - alpha) * frame.astype(np.float64) + alpha * colour


@pytest.mark.parametrize("mode", ["minmax", "log"])
def test_normalize_gives_unit_range(mode):
    attn = RNG.random((7, 5)) ** 4
    out = normalize_map(attn, mode=mode)
    assert out.shape == (7, 5)
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)


def test_log_mode_is_monotone_and_lifts_faint_values():
    attn = np.array([[0.0, 0.001, 0.01, 0.1, 1.0]])
    lin, log = normalize_map(attn), normalize_map(attn, mode="log")
    assert np.all(np.diff(log[0]) > 0)
    assert np.all(log[0, 1:4] > lin[0, 1:4] + 0.05)  # a decade below the peak stays visible
    with pytest.raises(ValueError, match="non-negative"):
        normalize_map(attn - 0.5, mode="log")


def test_global_mode_respects_vmin_vmax():
    attn = np.array([[0.0, 0.5], [1.0, 3.0]])
    out = normalize_map(attn, mode="global", vmin=0.0, vmax=2.0)
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])  # 3.0 clipped to 1
    assert normalize_map(attn / 4, mode="global", vmin=0.0, vmax=2.0).max() == pytest.approx(0.375)
    with pytest.raises(ValueError, match="vmin and vmax"):
        normalize_map(attn, mode="global", vmin=0.0)
    with pytest.raises(ValueError, match="greater than"):
        normalize_map(attn, mode="global", vmin=1.0, vmax=1.0)
    with pytest.raises(ValueError, match="mode='global' only"):
        normalize_map(attn, vmin=0.0, vmax=1.0)


def test_constant_map_normalises_to_zero_and_bad_input_is_named():
    assert not normalize_map(np.full((3, 3), 0.2)).any()
    assert not normalize_map(np.zeros((3, 3)), mode="log").any()
    with pytest.raises(ValueError, match="mode='nope'"):
        normalize_map(np.zeros((2, 2)), mode="nope")
    with pytest.raises(ValueError, match=r"attn must be a non-empty 2-D map"):
        normalize_map(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        normalize_map(np.array([[0.0, np.nan]]))


@pytest.mark.parametrize("resample", ["bilinear", "nearest"])
def test_overlay_of_zero_map_is_the_colour_of_zero_blended(resample):
    frame = RNG.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    out = overlay(frame, np.zeros((4, 4)), alpha=0.3, resample=resample)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_allclose(out, _blend(frame, 0.0, alpha=0.3), atol=0.5 + 1e-9)


def test_hot_patch_is_hottest_in_its_nearest_region():
    frame = np.full((64, 64, 3), 128, np.uint8)
    attn = np.zeros((4, 4))
    attn[1, 2] = 1.0  # row 1, column 2 of the patch grid -> pixels rows 16:32, columns 32:48
    out = overlay(frame, attn, resample="nearest").astype(np.float64)
    hot, cold = _blend(frame, 1.0), _blend(frame, 0.0)
    inside = np.zeros((64, 64), bool)
    inside[16:32, 32:48] = True
    np.testing.assert_allclose(out[inside], hot[inside], atol=0.5 + 1e-9)
    np.testing.assert_allclose(out[~inside], cold[~inside], atol=0.5 + 1e-9)


def test_hot_patch_peak_stays_in_its_region_with_bilinear():
    frame = np.full((64, 64, 3), 128, np.uint8)
    attn = np.zeros((4, 4))
    attn[3, 0] = 1.0
    out = overlay(frame, attn, alpha=1.0, cmap="viridis").astype(np.float64)
    dist = np.linalg.norm(out - _blend(frame, 1.0, alpha=1.0, cmap="viridis"), axis=-1)  # (64, 64)
    r, c = np.unravel_index(np.argmin(dist), dist.shape)
    assert 48 <= r < 64 and 0 <= c < 16


def test_overlay_on_pixel_grid_and_argument_errors():
    frame = np.zeros((8, 8, 3), np.uint8)
    attn = np.arange(64, dtype=float).reshape(8, 8)
    out = overlay(frame, attn, alpha=1.0, cmap="viridis")
    expected = _blend(frame, attn / 63, alpha=1.0, cmap="viridis")  # no resampling on the pixel grid
    np.testing.assert_allclose(out, expected, atol=0.5 + 1e-9)
    with pytest.raises(ValueError, match="cmap='nope'.*viridis"):
        overlay(frame, attn, cmap="nope")
    with pytest.raises(ValueError, match="alpha=1.5"):
        overlay(frame, attn, alpha=1.5)
    with pytest.raises(ValueError, match="resample='cubic'"):
        overlay(frame, attn, resample="cubic")
    with pytest.raises(ValueError, match=r"frame must be RGB uint8"):
        overlay(frame.astype(np.float32), attn)


def test_torch_tensors_of_any_float_dtype_are_accepted():
    torch = pytest.importorskip("torch")
    attn = RNG.random((4, 4))
    frame = np.zeros((16, 16, 3), np.uint8)
    np.testing.assert_array_equal(overlay(frame, torch.tensor(attn)), overlay(frame, attn))
    heads = torch.tensor(RNG.random((3, 4, 4))).to(torch.bfloat16)
    assert most_active_head(heads) == most_active_head(heads.float().numpy())


def _heads():
    uniform = np.full((4, 4), 1 / 16)
    peaked = np.full((4, 4), 0.01)
    peaked[2, 1] = 1 - 15 * 0.01
    return uniform, peaked


@pytest.mark.parametrize("by", ["variance", "entropy"])
@pytest.mark.parametrize("peaked_first", [False, True])
def test_most_active_head_picks_the_peaked_head(by, peaked_first):
    uniform, peaked = _heads()
    heads = np.stack([peaked, uniform, uniform] if peaked_first else [uniform, uniform, peaked])
    assert most_active_head(heads, by=by) == (0 if peaked_first else 2)


def test_most_active_head_errors_and_zero_map():
    uniform, peaked = _heads()
    assert most_active_head(np.stack([np.zeros((4, 4)), peaked]), by="entropy") == 1
    with pytest.raises(ValueError, match="by='mean'"):
        most_active_head(np.stack([uniform, peaked]), by="mean")
    with pytest.raises(ValueError, match="attn_heads must be a stack"):
        most_active_head(uniform)


def test_head_grid_size_layout_and_labels():
    frame = RNG.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    heads = RNG.random((5, 4, 4))
    grid = head_grid(frame, heads, titles=False)  # cols = ceil(sqrt(5)) = 3, rows = 2
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 32 + _GAP, 3 * 48 + 2 * _GAP, 3)
    np.testing.assert_array_equal(grid[:32, 48 + _GAP : 96 + _GAP], overlay(frame, heads[1]))
    np.testing.assert_array_equal(grid[32 + _GAP :, 2 * (48 + _GAP) :], 32)  # the empty sixth tile
    labelled = head_grid(frame, heads)
    assert labelled.shape == grid.shape and (labelled != grid).any()
    assert head_grid(frame, heads, cols=5).shape == (32, 5 * 48 + 4 * _GAP, 3)
    with pytest.raises(ValueError, match="titles must be"):
        head_grid(frame, heads, titles=["a", "b"])
    with pytest.raises(ValueError, match="cols=0"):
        head_grid(frame, heads, cols=0)


def test_head_grid_global_mode_shares_the_range_of_all_heads():
    frame = np.zeros((16, 16, 3), np.uint8)
    heads = np.stack([np.full((4, 4), 0.5), np.ones((4, 4))])
    grid = head_grid(frame, heads, titles=False, mode="global", alpha=1.0)
    left, right = grid[:, :16], grid[:, 16 + _GAP :]
    np.testing.assert_allclose(left, np.broadcast_to(_blend(frame, 0.0, 1.0), left.shape), atol=0.5 + 1e-9)
    np.testing.assert_allclose(right, np.broadcast_to(_blend(frame, 1.0, 1.0), right.shape), atol=0.5 + 1e-9)


def test_layer_strip_size_and_labels():
    frame = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    layers = RNG.random((3, 5, 5))
    strip = layer_strip(frame, layers, ["L2", "L8", "L17"])
    assert strip.shape == (40, 3 * 30 + 2 * _GAP, 3) and strip.dtype == np.uint8
    assert layer_strip(frame, layers).shape == strip.shape
    with pytest.raises(ValueError, match="labels must be"):
        layer_strip(frame, layers, ["only one"])


@pytest.mark.parametrize("name", ["a/b/out.png", "c/out.jpg", "out.JPEG"])
def test_save_image_by_suffix_creates_parents(tmp_path, name):
    img = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = save_image(img, tmp_path / name, quality=95)
    with Image.open(path) as im:
        back = np.asarray(im.convert("RGB"))
        assert im.format == ("PNG" if name.endswith(".png") else "JPEG")
    assert back.shape == img.shape
    if name.endswith(".png"):
        np.testing.assert_array_equal(back, img)


def test_save_image_rejects_bad_suffix_and_input(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"suffix '\.gif'"):
        save_image(img, tmp_path / "x.gif")
    with pytest.raises(ValueError, match="img must be uint8"):
        save_image(img.astype(float), tmp_path / "x.png")
    with pytest.raises(ValueError, match="quality=0"):
        save_image(img, tmp_path / "x.jpg", quality=0)


def test_rendering_imports_no_pyplot():
    """Colour maps come from matplotlib's registry: rendering never imports pyplot or picks a backend."""
    code = (
        "import sys, policylens.attention; before = 'matplotlib.pyplot' in sys.modules; "
        "import numpy as np; from policylens.attention._render import head_grid; "
        "head_grid(np.zeros((8, 8, 3), np.uint8), np.ones((2, 2, 2))); "
        "print(before, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
