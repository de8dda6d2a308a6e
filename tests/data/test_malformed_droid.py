"""Malformed DROID episodes, both layouts: each case copies a valid episode (``write_droid_episode`` via
the session fixture, or the public-layout writer of conftest), damages one file, and checks that
reading raises ``EpisodeFormatError`` naming that file and the field."""

import json
import shutil

import h5py
import numpy as np
import pytest

from policylens.data import EpisodeFormatError
from policylens.data.droid import open_episode

TRAJ = "trajectory.h5"


def _read_all(path):
    """Open the episode and decode step 0 of every camera (frames are lazy)."""
    ep = open_episode(path)
    for cam in ep.camera_names:
        ep.frame(cam, 0)
    return ep


def _truncate(rel, keep=0.5):
    def damage(ep):
        data = (ep / rel).read_bytes()
        (ep / rel).write_bytes(data[: int(len(data) * keep)])

    return damage


def _h5(edit):
    def damage(ep):
        with h5py.File(ep / TRAJ, "a") as f:
            edit(f)

    return damage


def _replace(f, key, value):
    del f[key]
    f[key] = value


def _json(rel, edit):
    def damage(ep):
        value = json.loads((ep / rel).read_text())
        (ep / rel).write_text(json.dumps(edit(value)))

    return damage


def _calibration_json_only(edit):
    """Drop the h5 intrinsics of varied_camera_1 so calibration.json is read, then edit the JSON entry."""

    def damage(ep):
        with h5py.File(ep / TRAJ, "a") as f:
            del f["observation/camera_intrinsics/varied_camera_1"]
        value = json.loads((ep / "calibration.json").read_text())
        edit(value["varied_camera_1"])
        (ep / "calibration.json").write_text(json.dumps(value))

    return damage


def _mp4_only_truncated(ep):
    shutil.rmtree(ep / "recordings" / "frames")
    _truncate("recordings/varied_camera_1.mp4", 0.3)(ep)


EXPORT_CASES = {  # name: (damage, damaged file relative to the episode, text the message must hold)
    "truncated trajectory.h5": (_truncate(TRAJ), TRAJ, "not a readable HDF5 file"),
    "missing field": (_h5(lambda f: f.__delitem__("action/gripper_position")), TRAJ, "'action/gripper_position'"),
    "field of wrong width": (
        _h5(lambda f: _replace(f, "action/cartesian_position", np.zeros((len(f["action/gripper_position"]), 5)))),
        TRAJ,
        "field 'action/cartesian_position' has shape",
    ),
    "field of wrong length": (
        _h5(lambda f: _replace(f, "observation/robot_state/gripper_position", np.zeros(3))),
        TRAJ,
        "field 'observation/robot_state/gripper_position' has 3 steps",
    ),
    "non-numeric field": (
        _h5(lambda f: _replace(f, "action/gripper_position", np.array([b"open"] * len(f["action/gripper_position"])))),
        TRAJ,
        "field 'action/gripper_position' holds",
    ),
    "extrinsics of wrong width": (
        _h5(lambda f: _replace(f, "observation/camera_extrinsics/hand_camera", np.zeros((4, 5)))),
        TRAJ,
        "field 'observation/camera_extrinsics/hand_camera' has shape (4, 5)",
    ),
    "intrinsics of wrong shape": (
        _h5(lambda f: _replace(f, "observation/camera_intrinsics/hand_camera", np.zeros((2, 2)))),
        TRAJ,
        "field 'observation/camera_intrinsics/hand_camera' has shape (2, 2)",
    ),
    "state of wrong length": (
        _h5(lambda f: _replace(f, "observation/policylens/state", np.zeros((2, 3)))),
        TRAJ,
        "field 'observation/policylens/state' has shape (2, 3)",
    ),
    "truncated calibration.json": (_truncate("calibration.json"), "calibration.json", "is not valid JSON (line"),
    "calibration.json intrinsics 2x2": (
        _calibration_json_only(lambda e: e.update(intrinsics=[[1, 0], [0, 1]])),
        "calibration.json",
        "field 'varied_camera_1.intrinsics' has shape (2, 2)",
    ),
    "calibration.json intrinsics ragged": (
        _calibration_json_only(lambda e: e.update(intrinsics=[[1, 0, 0], [0, 1], "x"])),
        "calibration.json",
        "field 'varied_camera_1.intrinsics' is ragged or non-numeric",
    ),
    "calibration.json width text": (
        _calibration_json_only(lambda e: e.update(width="sixty-four")),
        "calibration.json",
        "field 'varied_camera_1.width' is 'sixty-four'",
    ),
    "calibration.json list": (_json("calibration.json", lambda v: [v]), "calibration.json", "holds a JSON list"),
    "truncated metadata.json": (_truncate("metadata.json", 0.7), "metadata.json", "is not valid JSON"),
    "instruction.txt not UTF-8": (
        lambda ep: (ep / "instruction.txt").write_bytes(b"pick the \xff cube\n"),
        "instruction.txt",
        "is not UTF-8 text",
    ),
    "damaged JPEG frame": (
        lambda ep: (ep / "recordings/frames/varied_camera_1/00000.jpg").write_bytes(b"\xff\xd8 not a jpeg"),
        "recordings/frames/varied_camera_1/00000.jpg",
        "is not a readable image",
    ),
    "truncated MP4 (no frames dir)": (_mp4_only_truncated, "recordings/varied_camera_1.mp4", "cannot be decoded"),
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_malformed_export_episode_names_file_and_field(droid_dir, tmp_path, name):
    damage, rel, field = EXPORT_CASES[name]
    ep = tmp_path / "ep"
    shutil.copytree(droid_dir[0], ep)
    damage(ep)
    with pytest.raises(EpisodeFormatError) as err:
        _read_all(ep)
    msg = str(err.value)
    assert str(ep / rel) in msg and field in msg, msg


META = "metadata_ILIAD+abc+2023-06-11-15h-52m-37s.json"
STAMPS = "observation/timestamp/cameras/222_estimated_capture"

PUBLIC_CASES = {
    "truncated metadata json": (_truncate(META, 0.6), META, "is not valid JSON (line 1"),
    "metadata json list": (_json(META, lambda v: [v]), META, "holds a JSON list"),
    "metadata names no camera": (
        _json(META, lambda v: {k: x for k, x in v.items() if "serial" not in k}),
        META,
        "names no camera; expected fields ['ext1_cam_serial'",
    ),
    "truncated trajectory.h5": (_truncate(TRAJ, 0.8), TRAJ, "not a readable HDF5 file"),
    "movement_enabled of wrong length": (
        _h5(lambda f: f.__setitem__("observation/controller_info/movement_enabled", np.ones(4, bool))),
        TRAJ,
        "field 'observation/controller_info/movement_enabled' has shape (4,)",
    ),
    "stamps of wrong length": (
        _h5(lambda f: _replace(f, STAMPS, np.arange(3))),
        TRAJ,
        f"field '{STAMPS}' has shape (3,)",
    ),
    "stamps not finite": (
        _h5(lambda f: _replace(f, STAMPS, np.array([0, 66, np.nan, 200, 266, 333.0]))),
        TRAJ,
        f"field '{STAMPS}' has shape (6,) and non-finite values",
    ),
    "extrinsics of wrong width": (
        _h5(lambda f: _replace(f, "observation/camera_extrinsics/111_left", np.zeros((6, 7)))),
        TRAJ,
        "field 'observation/camera_extrinsics/111_left' has shape (6, 7)",
    ),
    "extrinsics of wrong length": (
        _h5(lambda f: _replace(f, "observation/camera_extrinsics/111_left", np.zeros((4, 6)))),
        TRAJ,
        "field 'observation/camera_extrinsics/111_left' has 4 poses",
    ),
    "truncated MP4": (_truncate("recordings/MP4/111.mp4", 0.3), "recordings/MP4/111.mp4", "cannot be decoded"),
}


@pytest.mark.parametrize("name", list(PUBLIC_CASES))
def test_malformed_public_episode_names_file_and_field(write_public, tmp_path, name):
    damage, rel, field = PUBLIC_CASES[name]
    ep = write_public(tmp_path)
    _read_all(ep)  # valid before the damage
    damage(ep)
    with pytest.raises(EpisodeFormatError) as err:
        _read_all(ep)
    msg = str(err.value)
    assert str(ep / rel) in msg and field in msg, msg
