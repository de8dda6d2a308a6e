"""Pose helpers shared by the simulator and the readers: 4x4 poses <-> DROID 6-D poses."""

from __future__ import annotations

import math

import numpy as np


def pose_to_6d(pose: np.ndarray) -> np.ndarray:
    """(4, 4) pose -> DROID 6-D ``[x, y, z, rx, ry, rz]`` (extrinsic XYZ Euler)."""
    import pybullet as p  # on first use: importing it prints its build time

    R = pose[:3, :3]
    quat = matrix_to_quat(R)
    euler = p.getEulerFromQuaternion(quat)
    return np.array([*pose[:3, 3], *euler], dtype=np.float64)


def pose_from_6d(pose: np.ndarray) -> np.ndarray:
    """DROID 6-D ``[x, y, z, rx, ry, rz]`` -> (4, 4) pose."""
    import pybullet as p

    pose = np.asarray(pose, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = np.asarray(p.getMatrixFromQuaternion(p.getQuaternionFromEuler(pose[3:6]))).reshape(3, 3)
    T[:3, 3] = pose[:3]
    return T


def matrix_to_quat(rot: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix (3, 3) -> quaternion (x, y, z, w)."""
    R = rot
    tr = np.trace(R)
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x = 0.25 * s, (R[2, 1] - R[1, 2]) / s
        y, z = (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        w, x = (R[2, 1] - R[1, 2]) / s, 0.25 * s
        y, z = (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        w, x = (R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s
        y, z = 0.25 * s, (R[1, 2] + R[2, 1]) / s
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        w, x = (R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s
        y, z = (R[1, 2] + R[2, 1]) / s, 0.25 * s
    return (x, y, z, w)
