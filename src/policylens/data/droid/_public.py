"""Reader for the public DROID raw release (droid 1.0.1) layout.

``<lab>/{success,failure}/<date>/<asctime>/`` holds ``metadata_<...>.json``, ``trajectory.h5``
and ``recordings/MP4/<serial>.mp4`` (left image) or ``<serial>-stereo.mp4`` (side by side, the
left half is used).  Serials map to names: ``wrist_cam_serial`` -> hand_camera,
``ext1_cam_serial`` -> varied_camera_1, ``ext2_cam_serial`` -> varied_camera_2.

Clock alignment (assumption, stated in docs/formats.md): the control loop runs at 15 Hz and
the cameras at their own rate, so step t shows the video frame whose time (PTS, relative to
the first frame) is nearest to ``observation/timestamp/cameras/<serial>_estimated_capture[t]``
(ms) relative to step 0's capture time.  Without those timestamps, a video with exactly T
frames maps frame t to step t, and any other count is resampled linearly.  Steps where
``observation/controller_info/movement_enabled`` is false are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from .._frames import VideoFrames, read_video
from ._h5 import extrinsics_series, fixed_or_series, intrinsics_from, maybe, read_core

SERIAL_KEYS = {
    "ext1_cam_serial": "varied_camera_1",
    "ext2_cam_serial": "varied_camera_2",
    "wrist_cam_serial": "hand_camera",
}


def open_public_episode(path: Path) -> Episode:
    meta_file = sorted(path.glob("metadata_*.json"))[0]
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise EpisodeFormatError(f"{meta_file} is not valid JSON: {e}") from e
    traj = path / "trajectory.h5"
    if not traj.is_file():
        raise EpisodeFormatError(f"{traj} is missing; a public DROID episode holds trajectory.h5")
    with h5py.File(traj, "r") as f:
        actions, proprio, task_attr = read_core(f, traj)
        enabled = maybe(f, "observation/controller_info/movement_enabled")
        serials = {}
        for key, cam in SERIAL_KEYS.items():
            if key in meta:
                serials[cam] = str(meta[key])
        per_cam = {
            cam: (
                maybe(f, f"observation/camera_extrinsics/{s}_left"),
                maybe(f, f"observation/camera_intrinsics/{s}_left"),
                maybe(f, f"observation/timestamp/cameras/{s}_estimated_capture"),
            )
            for cam, s in serials.items()
        }
    if not serials:
        raise EpisodeFormatError(
            f"{meta_file} names no camera; expected fields {sorted(SERIAL_KEYS)} holding camera serials"
        )
    instruction = meta.get("current_task", task_attr)
    if instruction is None:
        raise EpisodeFormatError(f"{meta_file} has no 'current_task' (the instruction) and neither has {traj}")
    T_all = len(actions)
    keep = np.ones(T_all, dtype=bool) if enabled is None else np.asarray(enabled, dtype=bool)
    steps = np.flatnonzero(keep)
    cameras, calibration = {}, {}
    for cam, serial in serials.items():
        mp4 = path / "recordings" / "MP4" / f"{serial}.mp4"
        stereo = path / "recordings" / "MP4" / f"{serial}-stereo.mp4"
        if not mp4.is_file() and not stereo.is_file():
            raise EpisodeFormatError(
                f"{mp4} is missing (nor is {stereo.name} there); expected the {cam} video of serial {serial}"
            )
        video = mp4 if mp4.is_file() else stereo
        ext, K, stamps = per_cam[cam]
        index = _align(video, T_all, stamps)[steps]
        cameras[cam] = VideoFrames(video, left_half=video == stereo, index=index)
        if ext is not None and K is not None:
            ext4 = extrinsics_series(ext)
            ext4 = fixed_or_series(ext4[steps] if ext4.ndim == 3 else ext4)
            calibration[cam] = CameraCalibration(intrinsics_from(K), ext4)
    return Episode(
        path=path,
        instruction=str(instruction),
        actions=actions[steps],
        proprio=proprio[steps],
        cameras=cameras,
        calibration=calibration,
        success=bool(meta["success"]) if "success" in meta else path.parent.parent.name == "success",
        metadata=meta,
        layout="droid-public",
    )


def _align(video: Path, n_steps: int, stamps_ms: np.ndarray | None) -> np.ndarray:
    """(T,) video frame index for every control step."""
    _, times = read_video(video)
    n = len(times)
    if stamps_ms is not None and len(stamps_ms) == n_steps:
        step_t = (np.asarray(stamps_ms, dtype=np.float64) - float(stamps_ms[0])) / 1000.0
        rel = times - times[0]
        return np.abs(rel[None, :] - step_t[:, None]).argmin(axis=1)
    if n == n_steps:
        return np.arange(n_steps)
    return np.round(np.linspace(0, n - 1, n_steps)).astype(np.int64)
