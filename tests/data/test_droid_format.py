"""DROID raw layout: write -> read round trip, the public-release layout, errors naming fields."""

import h5py
import numpy as np
import pytest

from policylens.data.droid import EpisodeFormatError, open_episode
from policylens.sim.pybullet import SimEnv, record_episode


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


def test_public_layout_aligns_camera_clock(write_public, tmp_path):
    ep = open_episode(write_public(tmp_path))
    assert ep.layout == "droid-public" and ep.instruction == "put the marker in the cup"
    assert sorted(ep.camera_names) == ["hand_camera", "varied_camera_1", "varied_camera_2"]
    for t in range(len(ep)):  # 30 fps video, 15 Hz control: step t shows frame 2 t
        for cam in ep.camera_names:
            assert abs(int(ep.frame(cam, t).mean()) - 20 * t) <= 3, (cam, t)
    assert ep.frame("hand_camera", 0).shape == (16, 32, 3)  # left half of the stereo pair
    np.testing.assert_allclose(ep.calibration["varied_camera_1"].extrinsics[:3, 3], [0.1, 0.2, 0.3])


def test_public_layout_drops_disabled_steps(write_public, tmp_path):
    ep = open_episode(write_public(tmp_path, enabled=[True, False, True, True, False, True]))
    assert len(ep) == 4
    np.testing.assert_allclose(ep.actions[1, :6], np.arange(12, 18))
    assert abs(int(ep.frame("varied_camera_2", 1).mean()) - 40) <= 3  # step 2 -> frame 4


def test_errors_name_the_missing_file_or_field(droid_dir, write_public, tmp_path):
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
    pub = write_public(tmp_path / "pub")
    (pub / "recordings" / "MP4" / "111.mp4").unlink()
    with pytest.raises(EpisodeFormatError, match=r"111\.mp4"):
        open_episode(pub)


MS = 1_686_498_757_000 + np.arange(6) * 1000 / 15  # 6 steps at 15 Hz, in ms: 0.4 s with the last interval


@pytest.mark.parametrize(
    ("scale", "unit", "stamps_span"), [(1e-3, "seconds", "0.0003333 s"), (1e3, "microseconds", "333.3 s")]
)
def test_public_layout_rejects_stamps_in_other_units(write_public, tmp_path, scale, unit, stamps_span):
    """Stamps in s or us read as ms would map every step to the first / last frame: the reader refuses."""
    with pytest.raises(EpisodeFormatError) as err:
        open_episode(write_public(tmp_path, stamps=MS * scale))
    msg = str(err.value)
    assert "observation/timestamp/cameras/111_estimated_capture" in msg and "trajectory.h5" in msg
    assert f"spans {stamps_span} from the first to the last of its 6 steps" in msg  # the stamps' span
    assert "lasts 0.4 s (12 frames)" in msg  # the video's duration: 12 frames at 30 fps
    assert f"suggests the stamps are in {unit}" in msg


def test_public_layout_rejects_clock_jumps(write_public, tmp_path):
    jump = MS.copy()
    jump[3:] += 3_600_000  # the clock jumps an hour ahead between steps 2 and 3
    with pytest.raises(EpisodeFormatError, match=r"111_estimated_capture' spans 3600 s .* lasts 0\.4 s"):
        open_episode(write_public(tmp_path / "ahead", stamps=jump))
    back = MS.copy()
    back[3:] -= 1_000  # ... or a second back
    with pytest.raises(EpisodeFormatError, match=r"111_estimated_capture' goes back in time at step 3"):
        open_episode(write_public(tmp_path / "back", stamps=back))


def test_public_layout_accepts_ms_stamps_with_jitter(write_public, tmp_path):
    """Real capture stamps jitter by a few ms; the span check must not fire, and step t still gets frame 2 t."""
    ep = open_episode(write_public(tmp_path, stamps=MS + np.array([0, 3, -4, 2, 5, -1])))
    brightness = [int(ep.frame("varied_camera_1", t).mean()) for t in range(6)]
    np.testing.assert_allclose(brightness, 20 * np.arange(6), atol=3)  # frame k has brightness 10 k
