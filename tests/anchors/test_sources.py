"""Dataset sources for anchor caches: a LeRobot dataset with other camera names read through a camera
map (dataset camera -> policy camera), and a state whose size differs from the policy's."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from policylens.anchors import open_source
from policylens.data import FeedError, parse_camera_map
from policylens.data.lerobot import LeRobotWriter
from policylens.store import StoreError

T = 4


def _rec(state_dim: int, seed: int) -> dict:
    """A tiny recording with cameras ``side`` (dark, left-to-right ramp) and ``wrist`` (bright, flat)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 120, 32, dtype=np.float32)[None, None, :, None]
    side = np.broadcast_to(ramp + 10 * np.arange(T)[:, None, None, None], (T, 32, 32, 3)).astype(np.uint8)
    wrist = np.full((T, 32, 32, 3), 200, np.uint8) - 5 * np.arange(T, dtype=np.uint8)[:, None, None, None]
    return {
        "instruction": f"pick the cube {seed}",
        "success": True,
        "seed": seed,
        "scene": {},
        "actions": rng.normal(size=(T, 7)).astype(np.float32),
        "proprio": rng.normal(size=(T, state_dim)).astype(np.float32),
        "state": rng.normal(size=(T, state_dim)).astype(np.float32),
        "images": {"side": side, "wrist": wrist},
        "intrinsics": {c: np.eye(3) for c in ("side", "wrist")},
        "extrinsics": {c: np.repeat(np.eye(4)[None], T, 0) for c in ("side", "wrist")},
    }


def _dataset(root, state_dim=7, lerobot_like=False):
    """Two episodes written by ``LeRobotWriter``; ``lerobot_like`` drops ``observation.proprio`` as a
    dataset written by ``lerobot`` itself has none (the reader then uses ``observation.state``)."""
    writer = LeRobotWriter(root, fps=15, masks=False)
    for seed in range(2):
        writer.add_episode(_rec(state_dim, seed))
    writer.finalize()
    if lerobot_like:
        path = root / "data/chunk-000/file-000.parquet"
        pq.write_table(pq.read_table(path).drop_columns(["observation.proprio"]), path)
    return root


@pytest.fixture(scope="module")
def model():
    from policylens.models import load_model

    torch.manual_seed(0)
    return load_model("tiny_vla").eval()  # cameras varied_camera_1, hand_camera; state_dim 7


@pytest.fixture(scope="module")
def side_wrist(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("side_wrist"))


def test_parse_camera_map():
    assert parse_camera_map("side=varied_camera_1,wrist=hand_camera") == {
        "side": "varied_camera_1",
        "wrist": "hand_camera",
    }
    assert parse_camera_map(" side = varied_camera_1 , ") == {"side": "varied_camera_1"}
    for bad, match in (
        ("side", "entry 'side' is not DATASET_CAMERA=POLICY_CAMERA"),
        ("=hand_camera", "entry '=hand_camera' is not"),
        ("side=varied_camera_1,side=hand_camera", "dataset camera 'side' is mapped twice"),
        (" , ", "names no camera"),
    ):
        with pytest.raises(FeedError, match=match):
            parse_camera_map(bad)


def test_camera_map_feeds_dataset_cameras_to_policy_cameras(model, side_wrist):
    with pytest.raises(
        FeedError, match=r"no camera 'varied_camera_1' that the policy reads; it has \['side', 'wrist'\]"
    ):
        open_source(model, f"lerobot:{side_wrist}")
    source = open_source(model, f"lerobot:{side_wrist}", {"side": "varied_camera_1", "wrist": "hand_camera"})
    assert len(source) == 2 * T
    from policylens.data.lerobot import open_dataset

    ep = open_dataset(side_wrist)[1]
    for t in (0, T - 1):  # sample T + t is episode 1, step t: exactly what make_batch gives for the mapped frames
        images = {"varied_camera_1": ep.frame("side", t)[None], "hand_camera": ep.frame("wrist", t)[None]}
        want = model.make_batch(images, [ep.instruction], torch.as_tensor(ep.proprio[t])[None])
        got = source[T + t]
        for k, v in want.items():
            torch.testing.assert_close(got[k], v[0], rtol=0, atol=0)
    swapped = open_source(model, f"lerobot:{side_wrist}", "side=hand_camera,wrist=varied_camera_1")
    pv, pv_swapped = source[0]["pixel_values"], swapped[0]["pixel_values"]  # (n_cams, 3, S, S)
    assert not torch.equal(pv[0], pv[1])
    torch.testing.assert_close(pv_swapped, pv.flip(0), rtol=0, atol=0)
    by_key = open_source(model, f"lerobot:{side_wrist}", "observation.images.side=varied_camera_1,wrist=hand_camera")
    torch.testing.assert_close(by_key[3]["pixel_values"], source[3]["pixel_values"], rtol=0, atol=0)


def test_camera_map_errors_list_the_choices(model, side_wrist):
    spec = f"lerobot:{side_wrist}"
    with pytest.raises(FeedError, match=r"dataset camera 'top', but episode 0 .* has cameras \['side', 'wrist'\]"):
        open_source(model, spec, {"top": "varied_camera_1", "wrist": "hand_camera"})
    with pytest.raises(FeedError, match=r"maps onto \['left_camera'\].* cameras are \['varied_camera_1', 'hand_"):
        open_source(model, spec, {"side": "left_camera"})
    with pytest.raises(FeedError, match=r"several dataset cameras onto \['hand_camera'\]"):
        open_source(model, spec, "side=hand_camera,wrist=hand_camera")
    with pytest.raises(FeedError, match="no camera 'hand_camera' .* --camera-map side=hand_camera"):
        open_source(model, spec, {"side": "varied_camera_1"})
    with pytest.raises(StoreError, match="camera_map does not apply"):
        open_source(model, "synthetic:2", "side=varied_camera_1")


def test_state_size_differs_from_the_policy(model, tmp_path):
    """A dataset written like lerobot's (8-D observation.state, no observation.proprio) names both sizes."""
    root = _dataset(tmp_path / "ds8", state_dim=8, lerobot_like=True)
    with pytest.raises(FeedError) as err:
        open_source(model, f"lerobot:{root}", {"side": "varied_camera_1", "wrist": "hand_camera"})
    msg = str(err.value)
    assert "has a 8-D state but the policy reads a 7-D state (config.state_dim=7)" in msg
    assert "observation.proprio" in msg and "episode 0" in msg
