"""DROID raw layout: write -> read round trip, the public-release layout, errors naming fields."""

import json

import h5py
import numpy as np
import pytest

from policylens.data._frames import write_video
from policylens.data.droid import EpisodeFormatError, open_episode
from policylens.data.sim import SimEnv, record_episode


def test_round_trip_matches_the_recording(droid_dir, tmp_path):
    with SimEnv("reach", seed=0, image_size=64) as env:
        rec = record_episode(env, seed=0)  # generate_episodes' first layout (layout_seed(0, 0) == 0)
    ep = open_episode(droid_dir[0])
    assert ep.layout == "droid-export" and ep.instruction == rec["instruction"] and ep.success
    assert len(ep) == len(rec["actions"])
    np.testing.assert_allclose(ep.actions, rec["actions"], atol=1e-6)
    np.testing.assert_allclose(ep.proprio, rec["proprio"], atol=1e-6)
    np.testing.assert_allclose(ep.state, rec["state"], atol=1e-6)
    for cam in ("varied_camera_1", "varied_camera_2", "hand_camera"):
        for t in (0, len(ep) - 1):
            np.testing.assert_array_equal(ep.mask(cam, t), rec["segmentation"][cam][t])
            np.testing.assert_allclose(ep.depth(cam, t), rec["depth"][cam][t], atol=6e-4)
            err = np.abs(ep.frame(cam, t).astype(int) - rec["images"][cam][t].astype(int)).mean()
            assert err < 6, (cam, t, err)  # JPEG
        cal = ep.calibration[cam]
        np.testing.assert_allclose(cal.intrinsics, rec["intrinsics"][cam])
        np.testing.assert_allclose(cal.extrinsics_at(len(ep) - 1), rec["extrinsics"][cam][-1], atol=1e-6)
        assert cal.moving == (cam == "hand_camera")


def test_mp4_only_episode_reads_frames(droid_dir, tmp_path):
    import shutil

    copy = tmp_path / "ep"
    shutil.copytree(droid_dir[1], copy)
    shutil.rmtree(copy / "recordings" / "frames")
    ep, ref = open_episode(copy), open_episode(droid_dir[1])
    err = np.abs(ep.frame("varied_camera_1", 2).astype(int) - ref.frame("varied_camera_1", 2).astype(int))
    assert len(ep.frames("varied_camera_1")) == len(ref) and err.mean() < 6


def _write_public(root, steps=6, fps_ratio=2, enabled=None):
    """A synthetic episode in the public DROID release layout; video frame k has brightness 10 k."""
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
            stamps = 1_686_498_757_000 + np.arange(steps) * 1000 // 15  # ms, 15 Hz
            f[f"observation/timestamp/cameras/{s}_estimated_capture"] = stamps
        if enabled is not None:
            f["observation/controller_info/movement_enabled"] = np.asarray(enabled)
    return ep


def test_public_layout_aligns_camera_clock(tmp_path):
    ep = open_episode(_write_public(tmp_path))
    assert ep.layout == "droid-public" and ep.instruction == "put the marker in the cup"
    assert sorted(ep.camera_names) == ["hand_camera", "varied_camera_1", "varied_camera_2"]
    for t in range(len(ep)):  # 30 fps video, 15 Hz control: step t shows frame 2 t
        for cam in ep.camera_names:
            assert abs(int(ep.frame(cam, t).mean()) - 20 * t) <= 3, (cam, t)
    assert ep.frame("hand_camera", 0).shape == (16, 32, 3)  # left half of the stereo pair
    np.testing.assert_allclose(ep.calibration["varied_camera_1"].extrinsics[:3, 3], [0.1, 0.2, 0.3])


def test_public_layout_drops_disabled_steps(tmp_path):
    ep = open_episode(_write_public(tmp_path, enabled=[True, False, True, True, False, True]))
    assert len(ep) == 4
    np.testing.assert_allclose(ep.actions[1, :6], np.arange(12, 18))
    assert abs(int(ep.frame("varied_camera_2", 1).mean()) - 40) <= 3  # step 2 -> frame 4


def test_errors_name_the_missing_file_or_field(droid_dir, tmp_path):
    import shutil

    with pytest.raises(EpisodeFormatError, match="does not exist"):
        open_episode(tmp_path / "nowhere")
    copy = tmp_path / "ep"
    shutil.copytree(droid_dir[0], copy)
    with h5py.File(copy / "trajectory.h5", "a") as f:
        del f["action/gripper_position"]
    with pytest.raises(EpisodeFormatError, match="action/gripper_position"):
        open_episode(copy)
    (copy / "trajectory.h5").unlink()
    with pytest.raises(EpisodeFormatError, match=r"trajectory\.h5"):
        open_episode(copy)
    pub = _write_public(tmp_path / "pub")
    (pub / "recordings" / "MP4" / "111.mp4").unlink()
    with pytest.raises(EpisodeFormatError, match=r"111\.mp4"):
        open_episode(pub)
