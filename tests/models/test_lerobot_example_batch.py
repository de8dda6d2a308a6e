"""``LeRobotTeacher.example_batch``: random frames of every camera at the size the config names (the image
feature shape, else SmolVLA's ``resize_imgs_with_padding`` (W, H), else ``image_size``), made into the policy's
inputs by its pre-processor; the same seed gives the same batch; actions only where the config names them."""

from types import SimpleNamespace

import pytest
import torch

from lerobot_zoo import STATE, Pi0LikeConfig, Pi0LikePolicy, byte_preprocessor
from policylens.models import LeRobotTeacher
from smolvla_zoo import SmolVLALikeConfig, SmolVLALikePolicy


def _recording(policy, seen: list):
    """``byte_preprocessor`` that records the raw frames it is given and passes raw actions through."""
    base = byte_preprocessor(policy, max_tokens=6)

    def run(frame: dict) -> dict:
        seen.append(frame)
        out = base(frame)
        if "action" in frame:
            out["action"] = frame["action"]
        return out

    return run


def test_frame_size_reads_the_config():
    policy = SmolVLALikePolicy(SmolVLALikeConfig(image_size=32))
    teacher = LeRobotTeacher(policy, byte_preprocessor(policy), "smolvla")
    assert teacher.frame_size() == (32, 32)
    policy.config.resize_imgs_with_padding = (64, 48)  # (W, H) as SmolVLA's config writes it
    assert teacher.frame_size() == (48, 64)
    policy.config.image_features = {k: SimpleNamespace(shape=(3, 40, 56)) for k in policy.config.image_features}
    assert teacher.frame_size() == (40, 56)  # what the dataset gave LeRobot comes first


def test_example_batch_goes_through_the_preprocessor():
    policy = Pi0LikePolicy(Pi0LikeConfig())
    seen: list = []
    teacher = LeRobotTeacher(policy, _recording(policy, seen), "pi0")
    batch = teacher.example_batch(3, seed=4)
    frame = seen[-1]
    for cam in policy.config.image_features:
        assert frame[cam].shape == (3, 3, 28, 28) and frame[cam].min() >= 0 and frame[cam].max() <= 1
        assert batch[cam].shape == (3, 3, 28, 28)
    assert frame[STATE].shape == (3, 6) and len(frame["task"]) == 3 and "action" not in batch
    again = teacher.example_batch(3, seed=4)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert not torch.equal(teacher.example_batch(3, seed=5)[STATE], batch[STATE])
    with pytest.raises(ValueError, match="with_action=True but the config"):
        teacher.example_batch(1, with_action=True)
    policy.config.output_features = {"action": SimpleNamespace(shape=(5,))}
    teacher = LeRobotTeacher(policy, _recording(policy, seen), "pi0")
    assert teacher.example_batch(2, with_action=True)["action"].shape == (2, 4, 5)
