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
``observation/controller_info/movement_enabled`` is false are dropped.  Stamps in another unit
or with a clock jump would map every step to one frame, so the stamps' span (read as ms) must
agree with the video's duration within ``SPAN_RATIO``, else ``EpisodeFormatError`` names both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from .._files import read_json
from .._frames import VideoFrames, read_video
from ._h5 import fixed_or_series, maybe, open_h5, read_core, read_extrinsics, read_intrinsics

SERIAL_KEYS = {
    "ext1_cam_serial": "varied_camera_1",
    "ext2_cam_serial": "varied_camera_2",
    "wrist_cam_serial": "hand_camera",
}
SPAN_RATIO = (0.5, 1.25)  # accepted (stamps' span) / (video duration), both including their last interval
STAMPS = "observation/timestamp/cameras/{serial}_estimated_capture"


def open_public_episode(path: Path) -> Episode:
    meta_file = sorted(path.glob("metadata_*.json"))[0]
    meta = read_json(meta_file, "the public DROID episode metadata (current_task, *_cam_serial, success)")
    traj = path / "trajectory.h5"
    if not traj.is_file():
        raise EpisodeFormatError(f"{traj} is missing; a public DROID episode holds trajectory.h5")
    serials = {cam: str(meta[key]) for key, cam in SERIAL_KEYS.items() if key in meta}
    if not serials:
        raise EpisodeFormatError(
            f"{meta_file} names no camera; expected fields {sorted(SERIAL_KEYS)} holding camera serials"
        )
    with open_h5(traj) as f:
        actions, proprio, task_attr = read_core(f, traj)
        T_all = len(actions)
        enabled = maybe(f, "observation/controller_info/movement_enabled", traj)
        per_cam = {
            cam: (
                read_extrinsics(f, f"observation/camera_extrinsics/{s}_left", traj, T_all),
                read_intrinsics(f, f"observation/camera_intrinsics/{s}_left", traj),
                maybe(f, STAMPS.format(serial=s), traj),
            )
            for cam, s in serials.items()
        }
    instruction = meta.get("current_task", task_attr)
    if instruction is None:
        raise EpisodeFormatError(f"{meta_file} has no 'current_task' (the instruction) and neither has {traj}")
    if enabled is not None and np.shape(enabled) != (T_all,):
        raise EpisodeFormatError(
            f"{traj}: field 'observation/controller_info/movement_enabled' has shape {np.shape(enabled)}; "
            f"expected ({T_all},), one flag per step"
        )
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
        ext4, K, stamps = per_cam[cam]
        index = _align(video, T_all, stamps, traj, STAMPS.format(serial=serial))[steps]
        cameras[cam] = VideoFrames(video, left_half=video == stereo, index=index)
        if ext4 is not None and K is not None:
            ext4 = fixed_or_series(ext4[steps] if ext4.ndim == 3 else ext4)
            calibration[cam] = CameraCalibration(K, ext4)
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


def _align(video: Path, n_steps: int, stamps_ms: np.ndarray | None, traj: Path, key: str) -> np.ndarray:
    """(T,) video frame index for every control step (see the module docstring)."""
    _, times = read_video(video)
    n = len(times)
    if stamps_ms is None:
        if n == n_steps:
            return np.arange(n_steps)
        return np.round(np.linspace(0, n - 1, n_steps)).astype(np.int64)
    stamps = np.asarray(stamps_ms, dtype=np.float64)
    if stamps.shape != (n_steps,) or not np.isfinite(stamps).all():
        raise EpisodeFormatError(
            f"{traj}: field '{key}' has shape {stamps.shape}"
            f"{'' if np.isfinite(stamps).all() else ' and non-finite values'}; "
            f"expected ({n_steps},) finite capture times in milliseconds, one per step"
        )
    back = np.flatnonzero(np.diff(stamps) < 0)
    if len(back):
        k = int(back[0])
        raise EpisodeFormatError(
            f"{traj}: field '{key}' goes back in time at step {k + 1} ({stamps[k]:.0f} -> {stamps[k + 1]:.0f}); "
            "expected non-decreasing capture times in milliseconds on one clock"
        )
    step_t = (stamps - stamps[0]) / 1000.0  # seconds since step 0's capture
    rel = times - times[0]
    _check_span(step_t, rel, video, traj, key)
    return np.abs(rel[None, :] - step_t[:, None]).argmin(axis=1)


def _check_span(step_t: np.ndarray, rel: np.ndarray, video: Path, traj: Path, key: str) -> None:
    """Fail when the stamps' span (read as ms) and the video's duration disagree: other units
    (seconds, microseconds) or a clock jump would otherwise map every step to one frame.

    Both durations count their last interval (T steps of a 15 Hz loop cover T / 15 s, N frames at
    30 fps N / 30 s); their ratio must lie in ``SPAN_RATIO``."""
    if len(step_t) < 2 or len(rel) < 2:
        return
    stamps_s = step_t[-1] * len(step_t) / (len(step_t) - 1)
    video_s = rel[-1] * len(rel) / (len(rel) - 1)
    ratio = stamps_s / video_s if video_s > 0 else np.inf
    if SPAN_RATIO[0] <= ratio <= SPAN_RATIO[1]:
        return
    hint = ""
    for unit, scale in (("seconds", 1e-3), ("microseconds", 1e3), ("nanoseconds", 1e6)):
        if abs(np.log10(max(ratio, 1e-300) / scale)) < 0.5:
            hint = f" (the ratio {ratio:.3g} suggests the stamps are in {unit})"
    raise EpisodeFormatError(
        f"{traj}: field '{key}' spans {step_t[-1]:.4g} s from the first to the last of its {len(step_t)} steps when "
        f"read as milliseconds, but {video} lasts {video_s:.4g} s ({len(rel)} frames){hint}; with one step "
        f"interval added the two must agree within {SPAN_RATIO[0]}x-{SPAN_RATIO[1]}x, or steps map to the "
        "video's first or last frame. Convert the stamps to milliseconds on one clock, or delete the field to "
        "align by frame count."
    )
