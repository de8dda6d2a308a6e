"""Open a DROID raw episode, detecting its layout (benchmark re-export or public release)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from .._frames import ImageFrames, VideoFrames
from ._h5 import extrinsics_series, fixed_or_series, intrinsics_from, maybe, read_core
from ._public import open_public_episode

CAMERAS = ("varied_camera_1", "varied_camera_2", "hand_camera")


def open_episode(path: str | Path) -> Episode:
    """Open the DROID episode directory ``path``.

    Detects the public DROID raw release (``metadata_*.json`` + ``recordings/MP4/<serial>.mp4``)
    and the re-exported layout (``instruction.txt`` + ``recordings/<camera>.mp4`` / frames).
    """
    path = Path(path)
    if not path.is_dir():
        raise EpisodeFormatError(f"episode directory {path} does not exist")
    if sorted(path.glob("metadata_*.json")):
        return open_public_episode(path)
    return _open_export(path)


def _open_export(path: Path) -> Episode:
    traj = path / "trajectory.h5"
    if not traj.is_file():
        raise EpisodeFormatError(
            f"{traj} is missing; a DROID episode directory holds trajectory.h5 "
            "(plus instruction.txt and recordings/, or metadata_*.json for the public release)"
        )
    with h5py.File(traj, "r") as f:
        actions, proprio, attr_task = read_core(f, traj)
        state = maybe(f, "observation/policylens/state")
        ext_raw = {c: maybe(f, f"observation/camera_extrinsics/{c}") for c in CAMERAS}
        int_raw = {c: maybe(f, f"observation/camera_intrinsics/{c}") for c in CAMERAS}
        success_attr = bool(f.attrs["success"]) if "success" in f.attrs else None
    T = len(actions)
    instruction = _instruction(path, attr_task)
    calib_json = _read_json(path / "calibration.json")
    meta = _read_json(path / "metadata.json") or {}
    rec = path / "recordings"
    cameras, masks, depths, calibration = {}, {}, {}, {}
    for cam in CAMERAS:
        frame_dir, mp4 = rec / "frames" / cam, rec / f"{cam}.mp4"
        if frame_dir.is_dir():
            cameras[cam] = ImageFrames(frame_dir, T, "rgb", "jpg")
        elif mp4.is_file():
            cameras[cam] = VideoFrames(mp4, length=T)
        else:
            continue
        if (rec / "segmentation" / cam).is_dir():
            masks[cam] = ImageFrames(rec / "segmentation" / cam, T, "label", "png")
        if (rec / "depth" / cam).is_dir():
            depths[cam] = ImageFrames(rec / "depth" / cam, T, "depth_mm", "png")
        calibration_cam = _calibration(cam, ext_raw[cam], int_raw[cam], calib_json)
        if calibration_cam is not None:
            calibration[cam] = calibration_cam
    if not cameras:
        raise EpisodeFormatError(
            f"{rec} holds no camera recordings; expected recordings/frames/<camera>/00000.jpg or "
            f"recordings/<camera>.mp4 for a camera in {list(CAMERAS)}"
        )
    success = meta.get("success", success_attr)
    if success is None:
        success = path.parent.parent.name == "success"
    return Episode(
        path=path,
        instruction=instruction,
        actions=actions,
        proprio=proprio,
        state=None if state is None else state.astype(np.float32),
        cameras=cameras,
        calibration=calibration,
        masks=masks,
        depths=depths,
        success=bool(success),
        metadata=meta,
        layout="droid-export",
    )


def _instruction(path: Path, attr_task: str | None) -> str:
    f = path / "instruction.txt"
    if f.is_file():
        return f.read_text().strip()
    if attr_task:
        return attr_task
    raise EpisodeFormatError(
        f"{f} is missing and trajectory.h5 has no 'current_task' attribute; expected the language "
        "instruction in one of them"
    )


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EpisodeFormatError(f"{path} is not valid JSON: {e}") from e


def _calibration(cam, ext_raw, int_raw, calib_json) -> CameraCalibration | None:
    entry = (calib_json or {}).get(cam, {})
    K = intrinsics_from(int_raw)
    if K is None and "intrinsics" in entry:
        K = np.asarray(entry["intrinsics"])
    if ext_raw is not None:
        ext = fixed_or_series(extrinsics_series(ext_raw))
    elif "extrinsics" in entry:
        ext = np.asarray(entry["extrinsics"])
    else:
        return None
    if K is None:
        return None
    return CameraCalibration(K, ext, entry.get("width"), entry.get("height"))
