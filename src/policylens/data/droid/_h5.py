"""Small helpers for reading DROID ``trajectory.h5`` files with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .._episode import EpisodeFormatError
from .._geometry import pose_from_6d


def need(f: h5py.File, key: str, path: Path, what: str) -> np.ndarray:
    """Read dataset ``key`` or raise naming the file, the field and what it should hold."""
    if key not in f:
        raise EpisodeFormatError(
            f"{path} has no field '{key}'; expected {what}. "
            "Re-export the episode with this field, or check that the path is a DROID episode."
        )
    return np.asarray(f[key][()])


def maybe(f: h5py.File, key: str) -> np.ndarray | None:
    return np.asarray(f[key][()]) if key in f else None


def extrinsics_series(raw: np.ndarray) -> np.ndarray:
    """DROID 6-D poses (T, 6) or (6,) -> camera-to-world (T, 4, 4) or (4, 4)."""
    if raw.ndim == 1:
        return pose_from_6d(raw)
    return np.stack([pose_from_6d(r) for r in raw])


def fixed_or_series(poses: np.ndarray) -> np.ndarray:
    """Collapse a (T, 4, 4) series that never changes to one (4, 4) pose."""
    if poses.ndim == 3 and np.allclose(poses, poses[0], atol=1e-6):
        return poses[0]
    return poses


def intrinsics_from(raw: np.ndarray | None) -> np.ndarray | None:
    """(3, 3) or per-step (T, 3, 3) intrinsics -> (3, 3)."""
    if raw is None:
        return None
    return raw[0] if raw.ndim == 3 else raw


def decode_attr(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_core(f: h5py.File, path: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The fields every DROID layout shares: actions ``(T, 7)`` (ee target + gripper), proprio
    ``(T, 7)`` (ee pose + gripper) as float32, and the ``current_task`` attribute if present."""
    cart = need(f, "action/cartesian_position", path, "(T, 6) absolute ee targets")
    grip = need(f, "action/gripper_position", path, "(T,) gripper targets in [0, 1]")
    ocart = need(f, "observation/robot_state/cartesian_position", path, "(T, 6) ee poses")
    ogrip = need(f, "observation/robot_state/gripper_position", path, "(T,) gripper positions")
    task = decode_attr(f.attrs["current_task"]) if "current_task" in f.attrs else None
    actions = np.concatenate([cart, grip.reshape(-1, 1)], axis=1).astype(np.float32)
    proprio = np.concatenate([ocart, ogrip.reshape(-1, 1)], axis=1).astype(np.float32)
    return actions, proprio, task
