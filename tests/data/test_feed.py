"""The episode feed with a stand-in policy (no model needed): camera lookup and maps, the policy's
camera order, state-size checks, batches equal to reading the frames by hand, training samples."""

import numpy as np
import pytest
import torch

from policylens.data import (
    EpisodeFeed,
    EpisodeFormatError,
    FeedError,
    check_camera_map,
    parse_camera_map,
    robot_state,
    training_samples,
)
from policylens.data.droid import open_episode


class _Config:
    cameras = ("hand_camera", "varied_camera_1")  # not the dataset's order
    state_dim = 7


class _Policy:
    """Records what ``make_batch`` was given; returns it as tensors with the batch dim first."""

    config = _Config()

    def make_batch(self, images, instructions, state):
        return {
            **{f"img/{c}": v for c, v in images.items()},
            "state": state,
            "n_text": torch.tensor([len(instructions)]),
        }


@pytest.fixture(scope="module")
def episodes(droid_dir):
    return [open_episode(p) for p in droid_dir]  # the session's two generated reach episodes


def test_batches_equal_the_frames_read_by_hand_in_the_policys_camera_order(episodes):
    feed = EpisodeFeed(_Policy(), episodes)
    assert len(feed) == sum(len(ep) for ep in episodes)
    assert list(feed.cameras[0]) == ["hand_camera", "varied_camera_1"]
    ep, steps = episodes[1], [0, len(episodes[1]) - 1]
    batch = feed.batch(1, steps)
    for cam in _Config.cameras:
        want = np.stack([np.asarray(ep.frame(cam, t)) for t in steps])
        assert torch.equal(batch[f"img/{cam}"], torch.from_numpy(want))
    assert torch.equal(batch["state"], torch.tensor(np.asarray(ep.proprio)[steps], dtype=torch.float32))
    sample = feed[len(episodes[0])]  # episode 1, step 0, without the batch dim
    assert torch.equal(sample["img/hand_camera"], batch["img/hand_camera"][0])


def test_a_camera_map_renames_dataset_cameras(episodes):
    feed = EpisodeFeed(_Policy(), episodes, {"varied_camera_2": "varied_camera_1"})
    assert feed.cameras[0] == {"hand_camera": "hand_camera", "varied_camera_1": "varied_camera_2"}
    frame = feed.frames(0, [2])["varied_camera_1"][0]
    assert np.array_equal(frame, np.asarray(episodes[0].frame("varied_camera_2", 2)))


@pytest.mark.parametrize(
    ("camera_map", "match"),
    [
        ({"top": "hand_camera"}, r"camera_map names dataset camera 'top', but episode 0 \(.*\) has cameras"),
        ({"varied_camera_2": "wrist"}, r"maps onto \['wrist'\], which the policy does not read"),
        ({"varied_camera_1": "hand_camera", "varied_camera_2": "hand_camera"}, "several dataset cameras"),
        ({"varied_camera_2": 3}, "expected {dataset camera: policy camera} strings"),
    ],
)
def test_bad_camera_maps_are_refused(episodes, camera_map, match):
    with pytest.raises(FeedError, match=match):
        EpisodeFeed(_Policy(), episodes, camera_map)


def test_missing_camera_and_other_state_size_name_the_fix(episodes):
    class Wide(_Policy):
        class config:  # noqa: N801
            cameras, state_dim = ("hand_camera",), 9

    class Top(_Policy):
        class config:  # noqa: N801
            cameras, state_dim = ("top_camera",), 7

    with pytest.raises(FeedError, match=r"episode 0 .* has a 7-D state but the policy reads a 9-D state"):
        EpisodeFeed(Wide(), episodes)
    with pytest.raises(FeedError, match=r"no camera 'top_camera' .* --camera-map varied_camera_1=top_camera"):
        EpisodeFeed(Top(), episodes)
    with pytest.raises(FeedError, match="needs a policy with make_batch"):
        EpisodeFeed(object(), episodes)
    assert issubclass(FeedError, EpisodeFormatError)  # the CLI prints it in one line


def test_camera_map_text_and_checks():
    assert parse_camera_map("side = a, wrist=b") == {"side": "a", "wrist": "b"}
    with pytest.raises(FeedError, match="mapped twice"):
        parse_camera_map("side=a,side=b")
    assert check_camera_map({}, ["a"]) == {}


def test_robot_state_and_training_samples():
    assert robot_state({"proprio": [1, 2], "state": [3]}).tolist() == [1.0, 2.0]
    assert robot_state({"state": [3]}).dtype == np.float32
    with pytest.raises(FeedError, match=r"no robot state: keys \['images'\]"):
        robot_state({"images": {}})
    raw = {"images": {"c": np.zeros((2, 4, 4, 3))}, "proprio": np.ones((2, 7)), "action": np.zeros((2, 7))}
    (sample,) = training_samples([{**raw, "instruction": "go", "obs": np.zeros((2, 33))}])
    assert sorted(sample) == ["action", "images", "instruction", "state"] and sample["state"] is raw["proprio"]
    with pytest.raises(FeedError, match=r"training episode 0 lacks \['images'\].*render=True"):
        training_samples([{"proprio": 1, "action": 1, "instruction": "go"}])
