"""Shared fixtures for the data tests: one tiny generated dataset per format, per session, and a
writer of small episodes in the public DROID release layout (which has no writer in the library)."""

import json

import h5py
import numpy as np
import pytest

from policylens.data._frames import write_video
from policylens.sim.pybullet import generate_episodes


@pytest.fixture(scope="session")
def droid_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    return generate_episodes("reach", 2, root, seed=0, fmt="droid", image_size=64, progress=False)


@pytest.fixture(scope="session")
def lerobot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    return generate_episodes("reach", 2, root, seed=0, fmt="lerobot", image_size=64, progress=False)[0]


def _write_public(root, steps=6, fps_ratio=2, enabled=None, stamps=None):
    """A synthetic episode in the public DROID release layout; video frame k has brightness 10 k.

    Control at 15 Hz, video at 15 * ``fps_ratio`` fps; ``stamps`` (default: ms at 15 Hz) are
    written as every camera's ``observation/timestamp/cameras/<serial>_estimated_capture``."""
    ep = root / "ILIAD" / "success" / "2023-06-11" / "Sun_Jun_11_15:52:37_2023"
    (ep / "recordings" / "MP4").mkdir(parents=True)
    serials = {"ext1_cam_serial": "111", "ext2_cam_serial": "222", "wrist_cam_serial": "333"}
    meta = {"current_task": "put the marker in the cup", "success": True, "trajectory_length": steps, **serials}
    (ep / "metadata_ILIAD+abc+2023-06-11-15h-52m-37s.json").write_text(json.dumps(meta))
    n_frames = steps * fps_ratio
    frames = np.stack([np.full((16, 32, 3), 10 * k, np.uint8) for k in range(n_frames)])
    for s in ("111", "222"):
        write_video(ep / "recordings" / "MP4" / f"{s}.mp4", frames, fps=15 * fps_ratio)
    wide = np.concatenate([frames, np.zeros_like(frames)], axis=2)  # stereo: left | right
    write_video(ep / "recordings" / "MP4" / "333-stereo.mp4", wide, fps=15 * fps_ratio)
    if stamps is None:
        stamps = 1_686_498_757_000 + np.arange(steps) * 1000 // 15  # ms, 15 Hz
    with h5py.File(ep / "trajectory.h5", "w") as f:
        f["action/cartesian_position"] = np.arange(steps * 6, dtype=np.float64).reshape(steps, 6)
        f["action/gripper_position"] = np.linspace(0, 1, steps)
        f["action/joint_position"] = np.zeros((steps, 7))
        f["observation/robot_state/cartesian_position"] = np.ones((steps, 6))
        f["observation/robot_state/gripper_position"] = np.zeros(steps)
        f["observation/robot_state/joint_positions"] = np.zeros((steps, 7))
        for s in ("111", "222", "333"):
            f[f"observation/camera_extrinsics/{s}_left"] = np.tile([0.1, 0.2, 0.3, 0, 0, 0], (steps, 1))
            f[f"observation/camera_intrinsics/{s}_left"] = np.tile(np.eye(3), (steps, 1, 1))
            f[f"observation/camera_type/{s}"] = np.full(steps, 0 if s == "333" else 1)
            f[f"observation/timestamp/cameras/{s}_estimated_capture"] = np.asarray(stamps)
        if enabled is not None:
            f["observation/controller_info/movement_enabled"] = np.asarray(enabled)
    return ep


@pytest.fixture
def write_public():
    """``write_public(root, steps=6, fps_ratio=2, enabled=None, stamps=None) -> episode dir``."""
    return _write_public
