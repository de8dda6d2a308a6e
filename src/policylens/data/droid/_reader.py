"""Open a DROID raw episode, detecting its layout (benchmark re-export or public release)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from .._files import read_json, read_text
from .._frames import ImageFrames, VideoFrames
from ._h5 import fixed_or_series, maybe, open_h5, read_core, read_extrinsics, read_intrinsics
from ._public import open_public_episode

CAMERAS = ("varied_camera_1", "varied_camera_2", "hand_camera")
STATE = "observation/policylens/state"
CALIBRATION = "per camera: intrinsics (3x3), extrinsics (4x4 camera-to-world), width, height"


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
    meta_path = path / "metadata.json"
    meta = read_json(meta_path, "episode metadata (format, task, fps, success, ...)") if meta_path.is_file() else {}
    cams = _camera_names(meta, meta_path)
    with open_h5(traj) as f:
        actions, proprio, attr_task = read_core(f, traj)
        T = len(actions)
        state = maybe(f, STATE, traj)
        ext = {c: read_extrinsics(f, f"observation/camera_extrinsics/{c}", traj, T) for c in cams}
        K = {c: read_intrinsics(f, f"observation/camera_intrinsics/{c}", traj) for c in cams}
        success_attr = bool(f.attrs["success"]) if "success" in f.attrs else None
    if state is not None and (state.ndim != 2 or len(state) != T):
        raise EpisodeFormatError(f"{traj}: field '{STATE}' has shape {state.shape}; expected (T, D) with T = {T}")
    instruction = _instruction(path, attr_task)
    calib_path = path / "calibration.json"
    calib_json = read_json(calib_path, CALIBRATION) if calib_path.is_file() else {}
    rec = path / "recordings"
    cameras, masks, depths, calibration = {}, {}, {}, {}
    for cam in cams:
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
        calibration_cam = _calibration(cam, ext[cam], K[cam], calib_json, calib_path)
        if calibration_cam is not None:
            calibration[cam] = calibration_cam
    if not cameras and cams:
        raise EpisodeFormatError(
            f"{rec} holds no camera recordings; expected recordings/frames/<camera>/00000.jpg or "
            f"recordings/<camera>.mp4 for a camera in {list(cams)}"
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


def _camera_names(meta: dict, meta_path: Path) -> tuple[str, ...]:
    """The cameras ``metadata.json`` lists (``[]``: a state-only episode), else DROID's three."""
    if "cameras" not in meta:
        return CAMERAS
    names = meta["cameras"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise EpisodeFormatError(f"{meta_path}: field 'cameras' is {names!r}; expected a list of camera names")
    return tuple(names)


def _instruction(path: Path, attr_task: str | None) -> str:
    f = path / "instruction.txt"
    if f.is_file():
        return read_text(f, "the language instruction, one line").strip()
    if attr_task:
        return attr_task
    raise EpisodeFormatError(
        f"{f} is missing and trajectory.h5 has no 'current_task' attribute; expected the language "
        "instruction in one of them"
    )


def _calibration(cam: str, ext, intrinsics, calib_json: dict, calib_path: Path) -> CameraCalibration | None:
    """Calibration from trajectory.h5 (preferred) or calibration.json; None when either part is absent."""
    entry = calib_json.get(cam, {})
    if not isinstance(entry, dict):
        raise EpisodeFormatError(f"{calib_path}: field '{cam}' is a {type(entry).__name__}; expected {CALIBRATION}")
    K = intrinsics
    if K is None and "intrinsics" in entry:
        K = _json_matrix(entry["intrinsics"], (3, 3), f"{cam}.intrinsics", calib_path)
    if ext is not None:
        ext = fixed_or_series(ext)
    elif "extrinsics" in entry:
        ext = _json_matrix(entry["extrinsics"], (4, 4), f"{cam}.extrinsics", calib_path)
    if ext is None or K is None:
        return None
    size = {}
    for key in ("width", "height"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, int) and value >= 0):
            raise EpisodeFormatError(f"{calib_path}: field '{cam}.{key}' is {value!r}; expected pixels (int >= 0)")
        size[key] = value
    return CameraCalibration(K, ext, size["width"], size["height"])


def _json_matrix(value, shape: tuple[int, int], field: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.shape != shape:
        got = "is ragged or non-numeric" if arr is None else f"has shape {arr.shape}"
        raise EpisodeFormatError(f"{path}: field '{field}' {got}; expected a {shape[0]}x{shape[1]} number matrix")
    return arr
