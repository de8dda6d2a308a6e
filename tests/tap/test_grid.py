"""Token -> patch grid -> frame pixels, checked with hand-made attention patterns: plain resize,
resize with padding bars, a crop, a flip, and two cameras; and attention blocks sliced to
query x key spans before the copy equal the same block of the full map."""

import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import ImageTransform, PatchGrid, capture


def _hot(rows, cols, r, c):
    grid = torch.zeros(rows, cols)
    grid[r, c] = 1.0
    return grid


def test_plain_resize_puts_a_patch_on_its_frame_pixels():
    t = ImageTransform.resize((120, 160), (56, 56))
    frame = t.grid_to_frame(_hot(4, 4, 1, 3))  # patch row 1, column 3 of 4x4
    ys, xs = frame.nonzero(as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (30, 59, 120, 159)
    assert t.padding_mass(_hot(4, 4, 1, 3)) == 0.0


def test_resize_with_pad_reports_bar_mass_and_maps_content_back():
    t = ImageTransform.resize_with_pad((100, 200), (56, 56), bars="top_left")  # SmolVLA: 28 rows of bars on top
    assert t.pad == (28, 0, 0, 0)
    assert t.padding_mass(_hot(4, 4, 0, 0)) == pytest.approx(1.0)  # row 0 is all bar
    frame = t.grid_to_frame(_hot(4, 4, 3, 0))  # the last content row, first column
    ys, xs = frame.nonzero(as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (50, 99, 0, 49)
    assert t.grid_to_frame(_hot(4, 4, 0, 2)).sum() == 0  # bars are never drawn on the frame


def _openpi_resize_with_pad(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The reference: LeRobot pi0's ``resize_with_pad_torch`` (openpi) written out, (C, H, W)."""
    ratio = max(image.shape[2] / width, image.shape[1] / height)
    new_h, new_w = int(image.shape[1] / ratio), int(image.shape[2] / ratio)
    small = torch.nn.functional.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    pads = (left, width - new_w - left, top, height - new_h - top)
    return torch.nn.functional.pad(small, pads, value=-1.0)[0]


@pytest.mark.parametrize("frame_size", [(100, 200), (90, 60), (75, 75), (48, 130)])
def test_centred_bars_match_the_reference_resize_with_pad(frame_size):
    """A bright square on the frame goes through the reference; read back per input pixel with
    the transform, it lands on itself; the bars the reference drew are exactly the transform's."""
    h, w = frame_size
    frame = torch.zeros(3, h, w)
    frame[:, h // 2 - 12 : h // 2 + 12, w // 4 - 12 : w // 4 + 12] = 1.0
    model_input = _openpi_resize_with_pad(frame, 56, 56)[0]
    t = ImageTransform.resize_with_pad(frame_size, (56, 56))
    bars = (model_input == -1).float()  # a per-pixel "grid" of 56 x 56
    assert t.padding_mass(bars) == pytest.approx(1.0 if bars.any() else 0.0)
    assert t.padding_mass(1 - bars) == 0.0
    back = t.grid_to_frame(model_input.clamp(min=0), mode="bilinear") > 0.5
    square = frame[0] > 0.5
    assert (back & square).sum() / (back | square).sum() > 0.7  # IoU after a down- and up-sampling


def test_crop_and_flip():
    t = ImageTransform((100, 100), (20, 20), crop=(10, 50, 40, 40), hflip=True)
    frame = t.grid_to_frame(_hot(2, 2, 0, 0))  # top-left of the mirrored input = top-right of the crop
    ys, xs = frame.nonzero(as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 70, 89)


def test_two_cameras_each_on_their_own_grid():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    batch = model.example_batch(batch_size=2)
    prefix = model.token_layout(batch)["prefix"]
    row = torch.zeros(2, prefix.shape[1])
    wrist = prefix.positions("image[hand_camera]", 0)
    row[:, wrist[2]] = 1.0  # third patch of the wrist camera: grid row 1, column 0
    assert torch.equal(prefix.image_grid("hand_camera", row)[0], _hot(2, 2, 1, 0))
    assert prefix.image_grid("varied_camera_1", row).sum() == 0
    assert prefix.grids["hand_camera"] == PatchGrid(2, 2)
    assert model.image_transform((224, 224)) == ImageTransform.resize((224, 224), (28, 28))


def test_query_key_block_is_sliced_before_the_copy():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    batch = model.example_batch(batch_size=2)
    prefix = model.token_layout(batch)["prefix"]
    text = prefix["text"].any(0)  # union over the batch
    image = prefix["image"].any(0)
    with capture(model, ["llm.layers.1.attn.probs"]) as full:
        model.run_prefix(batch)
    with capture(model, ["llm.layers.1.attn.probs"], queries=text, keys=image, heads=[0, 2], dtype="float16") as cut:
        model.run_prefix(batch)
    block = cut["llm.layers.1.attn.probs"]
    assert block.shape == (2, 2, int(text.sum()), int(image.sum())) and block.dtype == torch.float16
    ref = full["llm.layers.1.attn.probs"][:, [0, 2]][:, :, text][..., image]
    torch.testing.assert_close(block.float(), ref, rtol=0, atol=1e-3)
