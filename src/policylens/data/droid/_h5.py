"""Small helpers for reading DROID ``trajectory.h5`` files with errors that name the field.

A truncated or damaged file, a missing field, a field of the wrong shape or a non-numeric field
all raise ``EpisodeFormatError`` naming the file and the field, never a raw h5py ``OSError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from .._episode import EpisodeFormatError
from .._geometry import pose_from_6d

H5_ERRORS = (OSError, RuntimeError, KeyError)  # what h5py raises on damaged metadata or chunks


@contextmanager
def open_h5(path: Path) -> Iterator[h5py.File]:
    """Open ``trajectory.h5`` for reading; an unreadable (truncated, damaged) file raises naming it."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EpisodeFormatError(
            f"{path} is not a readable HDF5 file ({e}); the file is truncated or damaged: re-copy or "
            "re-export trajectory.h5"
        ) from e
    with f:
        try:
            yield f
        except H5_ERRORS as e:  # damage found outside a named field (attributes, the root group)
            raise EpisodeFormatError(f"{path} is damaged ({e}); re-copy or re-export trajectory.h5") from e


def _has(f: h5py.File, key: str, path: Path) -> bool:
    try:
        return key in f
    except H5_ERRORS as e:
        raise EpisodeFormatError(f"{path}: looking up field '{key}' failed ({e}); the file is damaged") from e


def _read(f: h5py.File, key: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(f[key][()])
    except (*H5_ERRORS, TypeError) as e:  # damaged chunk or header, broken link, a group instead of a dataset
        raise EpisodeFormatError(f"{path}: field '{key}' cannot be read ({e}); the file is damaged") from e
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise EpisodeFormatError(f"{path}: field '{key}' holds {arr.dtype} values; expected numbers")
    return arr


def check_shape(arr: np.ndarray, key: str, path: Path, cols: tuple[int, ...], what: str) -> np.ndarray:
    """Check ``arr`` is (T, *cols) (or (T,) / (T, 1) when ``cols`` is ()) and return it."""
    if cols == () and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 + len(cols) or tuple(arr.shape[1:]) != cols:
        raise EpisodeFormatError(f"{path}: field '{key}' has shape {arr.shape}; expected {what}")
    return arr


def need(f: h5py.File, key: str, path: Path, what: str, cols: tuple[int, ...] | None = None) -> np.ndarray:
    """Read dataset ``key`` or raise naming the file, the field and what it should hold.

    With ``cols`` the field must be (T, *cols) (``()``: (T,) or (T, 1))."""
    if not _has(f, key, path):
        raise EpisodeFormatError(
            f"{path} has no field '{key}'; expected {what}. "
            "Re-export the episode with this field, or check that the path is a DROID episode."
        )
    arr = _read(f, key, path)
    return arr if cols is None else check_shape(arr, key, path, cols, what)


def maybe(f: h5py.File, key: str, path: Path) -> np.ndarray | None:
    """Read dataset ``key`` if present (errors as for ``need``), else None."""
    return _read(f, key, path) if _has(f, key, path) else None


def read_extrinsics(f: h5py.File, key: str, path: Path, steps: int) -> np.ndarray | None:
    """DROID 6-D poses at ``key``, (T, 6) or (6,) -> camera-to-world (T, 4, 4) or (4, 4); None if absent."""
    raw = maybe(f, key, path)
    if raw is None:
        return None
    if raw.shape == (6,):
        return pose_from_6d(raw)
    check_shape(raw, key, path, (6,), f"(T, 6) or (6,) camera poses [x, y, z, rx, ry, rz], T = {steps}")
    if len(raw) != steps:
        raise EpisodeFormatError(f"{path}: field '{key}' has {len(raw)} poses; expected one per step ({steps}) or one")
    return np.stack([pose_from_6d(r) for r in raw])


def read_intrinsics(f: h5py.File, key: str, path: Path) -> np.ndarray | None:
    """(3, 3) or per-step (T, 3, 3) intrinsics at ``key`` -> (3, 3); None if absent."""
    raw = maybe(f, key, path)
    if raw is None:
        return None
    if raw.shape[-2:] != (3, 3) or raw.ndim not in (2, 3) or len(raw) == 0:
        raise EpisodeFormatError(f"{path}: field '{key}' has shape {raw.shape}; expected (3, 3) or (T, 3, 3)")
    return raw[0] if raw.ndim == 3 else raw


def fixed_or_series(poses: np.ndarray) -> np.ndarray:
    """Collapse a (T, 4, 4) series that never changes to one (4, 4) pose."""
    if poses.ndim == 3 and np.allclose(poses, poses[0], atol=1e-6):
        return poses[0]
    return poses


def decode_attr(f: h5py.File, name: str, path: Path) -> str | None:
    """The string attribute ``name`` of the file, or None when absent."""
    if name not in f.attrs:
        return None
    value = f.attrs[name]
    try:
        return value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as e:
        raise EpisodeFormatError(f"{path}: attribute '{name}' is not UTF-8 text ({e.reason})") from e


def read_core(f: h5py.File, path: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The fields every DROID layout shares: actions ``(T, 7)`` (ee target + gripper), proprio
    ``(T, 7)`` (ee pose + gripper) as float32, and the ``current_task`` attribute if present."""
    fields = {
        "action/cartesian_position": ((6,), "(T, 6) absolute ee targets"),
        "action/gripper_position": ((), "(T,) gripper targets in [0, 1]"),
        "observation/robot_state/cartesian_position": ((6,), "(T, 6) ee poses"),
        "observation/robot_state/gripper_position": ((), "(T,) gripper positions"),
    }
    cart, grip, ocart, ogrip = (need(f, key, path, what, cols) for key, (cols, what) in fields.items())
    T = len(cart)
    for key, arr in zip(fields, (cart, grip, ocart, ogrip), strict=True):
        if len(arr) != T:
            raise EpisodeFormatError(
                f"{path}: field '{key}' has {len(arr)} steps but 'action/cartesian_position' has {T}; "
                "every per-step field must have one row per control step"
            )
    task = decode_attr(f, "current_task", path)
    actions = np.concatenate([cart, grip.reshape(-1, 1)], axis=1).astype(np.float32)
    proprio = np.concatenate([ocart, ogrip.reshape(-1, 1)], axis=1).astype(np.float32)
    return actions, proprio, task
