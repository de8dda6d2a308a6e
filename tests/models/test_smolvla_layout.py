"""SmolVLA's prefix layout follows its config and the batch the way ``embed_prefix`` builds it.
Token counts are the ones measured on the real ``SmolVLAPolicy`` (lerobot 0.4.4, tiny random
weights, SmolVLM2 image geometry: 512 px, patch 16, scale factor 4, 6 language tokens)."""

from types import SimpleNamespace

import pytest
import torch

from policylens.models import lerobot_layout

CAMS = ["observation.images.top", "observation.images.wrist"]


def _smolvla(**options):
    cfg = SimpleNamespace(
        image_features=dict.fromkeys(CAMS),
        empty_cameras=0,
        resize_imgs_with_padding=(512, 512),
        add_image_special_tokens=False,
        prefix_length=-1,
        chunk_size=10,
    )
    for key, value in options.items():
        setattr(cfg, key, value)
    if cfg.empty_cameras:
        empty = (f"observation.images.empty_camera_{i}" for i in range(cfg.empty_cameras))
        cfg.image_features.update(dict.fromkeys(empty))
    vlm = SimpleNamespace(vision_config=SimpleNamespace(patch_size=16), scale_factor=4)
    core = SimpleNamespace(
        vlm_with_expert=SimpleNamespace(vlm=SimpleNamespace(config=vlm)),
        global_image_start_token=torch.zeros(2),
        image_end_token=torch.zeros(1),
    )
    return SimpleNamespace(config=cfg, model=core)


def _batch(cameras, size=512):
    lang = torch.ones(2, 6, dtype=torch.bool)
    lang[1, -1] = False
    return {**{c: torch.rand(2, 3, size, size) for c in cameras}, "observation.language.attention_mask": lang}


@pytest.mark.parametrize(
    ("options", "cameras", "length", "per_image", "valid_images"),
    [
        ({}, CAMS, 135, 64, 2),
        ({}, CAMS[1:], 71, 64, 1),  # empty_cameras=0: the missing camera is dropped
        ({"add_image_special_tokens": True}, CAMS, 141, 64, 2),
        ({"prefix_length": 160}, CAMS, 160, 64, 2),
        ({"resize_imgs_with_padding": (256, 256)}, CAMS, 39, 16, 2),
        ({"empty_cameras": 1}, CAMS[1:], 135, 64, 1),  # one padding image, invalid
        ({"empty_cameras": 1}, CAMS, 199, 64, 2),  # empty_camera_0 is always missing: padded
    ],
)
def test_prefix_length_and_spans(options, cameras, length, per_image, valid_images):
    model = _smolvla(**options)
    layout = lerobot_layout("smolvla", model, _batch(cameras))
    prefix = layout["prefix"]
    assert prefix.shape == (2, length)
    images = sum(int(prefix[f"image[{c}]"][0].sum()) for c in prefix.cameras)
    assert images == valid_images * per_image
    for cam in cameras:
        assert prefix[f"image[{cam}]"][0].sum() == per_image
    special = 3 * (2 + options.get("empty_cameras", 0)) if options.get("add_image_special_tokens") else 0
    assert prefix["image_special"][0].sum() == special
    assert prefix["text"].sum(1).tolist() == [6, 5] and prefix["state"].sum(1).tolist() == [1, 1]
    state_at = prefix.positions("state", 0).item()
    assert prefix["valid"][:, state_at + 1 :].sum() == 0  # prefix_length padding comes after the state
    assert layout["suffix"]["action"].sum(1).tolist() == [10, 10]
    side = int(per_image**0.5)
    assert {cam: (g.rows, g.cols) for cam, g in prefix.grids.items()} == dict.fromkeys(cameras, (side, side))


def test_present_cameras_come_first_and_a_padding_mask_hides_a_sample():
    model = _smolvla()
    batch = _batch(CAMS)
    batch["observation.images.top_padding_mask"] = torch.tensor([True, False])
    prefix = lerobot_layout("smolvla", model, batch)["prefix"]
    assert prefix.positions("image[observation.images.top]", 0).tolist() == list(range(64))
    assert prefix["image[observation.images.top]"][1].sum() == 0 and not prefix["valid"][1, :64].any()
    assert prefix.positions("image[observation.images.wrist]", 1).tolist() == list(range(64, 128))
