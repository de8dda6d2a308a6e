"""Write a recorded episode in the DROID raw layout (the re-exported benchmark flavour).

```
{success|failure}/{YYYY-MM-DD}/{YYYY-MM-DD-HHh-MMm-SSs}/
  instruction.txt  calibration.json  metadata.json  trajectory.h5
  recordings/{camera}.mp4
  recordings/frames/{camera}/00000.jpg ...
  recordings/segmentation/{camera}/00000.png   (uint8 labels, map in metadata.json)
  recordings/depth/{camera}/00000.png          (uint16 millimetres, 0 = invalid)
```
Segmentation, depth and joint states are written when the recording has them (a MetaWorld
recording has RGB only, or no cameras at all: ``metadata.json`` then lists ``"cameras": []``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import h5py
import numpy as np

from .._frames import write_image, write_video
from .._geometry import pose_to_6d

FORMAT_VERSION = "policylens-droid-1"
CALIBRATION_CONVENTION = (
    "OpenCV pinhole (x right, y down, z forward; pixel centres at integers); extrinsics are "
    "camera-to-world 4x4, world = robot base frame; extrinsics_6d = [x, y, z, rx, ry, rz], "
    "extrinsic-XYZ Euler"
)


def episode_dirname(index: int, base: dt.datetime | None = None) -> tuple[str, str]:
    """Deterministic (date, timestamp) directory names for episode ``index``."""
    when = (base or dt.datetime(2026, 1, 1)) + dt.timedelta(minutes=index)
    return when.strftime("%Y-%m-%d"), when.strftime("%Y-%m-%d-%Hh-%Mm-%Ss")


def write_droid_episode(root: Path, rec: dict, index: int, jpeg_frames: bool = True) -> Path:
    """Write recording ``rec`` (see ``policylens.sim.pybullet.record_episode``) under ``root``."""
    date, stamp = episode_dirname(index)
    path = Path(root) / ("success" if rec["success"] else "failure") / date / stamp
    path.mkdir(parents=True, exist_ok=True)
    (path / "instruction.txt").write_text(rec["instruction"] + "\n")
    cams = list(rec["intrinsics"])
    calib = {"convention": CALIBRATION_CONVENTION}
    for cam in cams:
        ext = rec["extrinsics"][cam]  # (T, 4, 4)
        calib[cam] = {
            "intrinsics": rec["intrinsics"][cam].tolist(),
            "extrinsics": ext[0].tolist(),
            "extrinsics_6d": pose_to_6d(ext[0]).tolist(),
            "width": int(rec.get("image_size", 0)),
            "height": int(rec.get("image_size", 0)),
            "moving": bool(not np.allclose(ext, ext[0])),
        }
    (path / "calibration.json").write_text(json.dumps(calib, indent=1))
    meta = {
        "format": FORMAT_VERSION,
        "task": rec["task"],
        "seed": rec["seed"],
        "fps": rec["fps"],
        "success": rec["success"],
        "trajectory_length": len(rec["actions"]),
        "cameras": cams,
        "scene": rec["scene"],
    }
    (path / "metadata.json").write_text(json.dumps(meta, indent=1))
    _write_trajectory(path / "trajectory.h5", rec, cams)
    rec_dir = path / "recordings"
    for cam in rec.get("images", {}):
        write_video(rec_dir / f"{cam}.mp4", rec["images"][cam], rec["fps"])
        for t, img in enumerate(rec["images"][cam]):
            if jpeg_frames:
                write_image(rec_dir / "frames" / cam / f"{t:05d}.jpg", img)
            if "segmentation" in rec:
                write_image(rec_dir / "segmentation" / cam / f"{t:05d}.png", rec["segmentation"][cam][t], "label")
            if "depth" in rec:
                write_image(rec_dir / "depth" / cam / f"{t:05d}.png", rec["depth"][cam][t], "depth_mm")
    return path


def _write_trajectory(path: Path, rec: dict, cams: list[str]) -> None:
    T, fps = len(rec["actions"]), rec["fps"]
    act = rec["actions"].astype(np.float64)  # (T, 7)
    prop = rec["proprio"].astype(np.float64)
    with h5py.File(path, "w") as f:
        f.attrs["current_task"] = rec["instruction"]
        f.attrs["success"] = bool(rec["success"])
        f.attrs["policylens_format"] = FORMAT_VERSION
        a = f.create_group("action")
        a["cartesian_position"] = act[:, :6]  # (T, 6) absolute ee target
        a["cartesian_velocity"] = np.gradient(act[:, :6], axis=0) * fps if T > 1 else np.zeros((T, 6))
        a["gripper_position"] = act[:, 6]  # (T,)
        a["gripper_velocity"] = np.gradient(act[:, 6]) * fps if T > 1 else np.zeros(T)
        if "joint_targets" in rec:
            targets = rec["joint_targets"].astype(np.float64)  # (T, 7)
            a["joint_position"] = targets
            a["joint_velocity"] = np.gradient(targets, axis=0) * fps if T > 1 else np.zeros_like(targets)
        o = f.create_group("observation")
        rs = o.create_group("robot_state")
        rs["cartesian_position"] = prop[:, :6]
        rs["gripper_position"] = prop[:, 6]
        if "joint_positions" in rec:
            rs["joint_positions"] = rec["joint_positions"].astype(np.float64)
        o["policylens/state"] = rec["state"]  # (T, D) proprio + objects + target one-hot + tray
        for cam in cams:
            ext = rec["extrinsics"][cam]
            o[f"camera_extrinsics/{cam}"] = np.stack([pose_to_6d(e) for e in ext])  # (T, 6)
            o[f"camera_intrinsics/{cam}"] = np.repeat(rec["intrinsics"][cam][None], T, axis=0)  # (T, 3, 3)
            wrist = cam in rec.get("wrist_cameras", ("hand_camera",))
            o[f"camera_type/{cam}"] = np.full(T, 0 if wrist else 1, dtype=np.int64)
            ms = np.round(rec["timestamps"] * 1000.0).astype(np.int64)
            o[f"timestamp/cameras/{cam}_estimated_capture"] = ms  # (T,) ms
        ns = np.round(rec["timestamps"] * 1e9).astype(np.int64)
        o["timestamp/robot_state/robot_timestamp_seconds"] = ns // 10**9
        o["timestamp/robot_state/robot_timestamp_nanos"] = ns % 10**9
        o["timestamp/control/step_start"] = ns // 10**6
        o["controller_info/movement_enabled"] = np.ones(T, dtype=bool)
