"""Pinhole cameras for the simulator: OpenCV-convention calibration and pybullet rendering.

Conventions (the same ones the DROID / LeRobot writers store):
- intrinsics ``K`` (3, 3), OpenCV: x right, y down, z forward; pixel ``(u, v)`` = (column, row)
  has its centre at integer coordinates, so ``cx = (W - 1) / 2``.
- extrinsics (4, 4) camera-to-world, world = robot base frame; the 6-D DROID form is
  ``[x, y, z, rx, ry, rz]`` with extrinsic-XYZ Euler angles (pybullet's roll-pitch-yaw).
- depth is the z-distance along the optical axis in metres (not the ray length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p

from ...data import matrix_to_quat, pose_from_6d, pose_to_6d

__all__ = ["FAR", "NEAR", "PinholeCamera", "look_at", "matrix_to_quat", "pose_from_6d", "pose_to_6d", "project"]

NEAR, FAR = 0.02, 4.0

# OpenCV camera axes -> OpenGL camera axes (y up, looking down -z)
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world (4, 4), OpenCV axes, for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking straight along `up`
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


@dataclass
class PinholeCamera:
    """A square-pixel pinhole camera with vertical field of view ``fov_deg``."""

    width: int
    height: int
    fov_deg: float = 60.0

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"camera size must be >= 8 px, got width={self.width} height={self.height}")
        if not 5.0 < self.fov_deg < 170.0:
            raise ValueError(f"fov_deg must lie in (5, 170), got {self.fov_deg}")

    @property
    def intrinsics(self) -> np.ndarray:
        """OpenCV ``K`` (3, 3)."""
        f = self.height / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))
        return np.array([[f, 0.0, (self.width - 1) / 2.0], [0.0, f, (self.height - 1) / 2.0], [0.0, 0.0, 1.0]])

    def render(self, client, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render RGB (H, W, 3) uint8, depth (H, W) float32 metres and body ids (H, W) int32."""
        view = np.linalg.inv(cam_to_world @ _CV_TO_GL)  # world -> OpenGL camera
        proj = p.computeProjectionMatrixFOV(self.fov_deg, self.width / self.height, NEAR, FAR)
        _, _, rgba, zbuf, seg = client.getCameraImage(
            self.width,
            self.height,
            viewMatrix=view.T.reshape(-1).tolist(),  # column-major
            projectionMatrix=proj,
            renderer=p.ER_TINY_RENDERER,
            shadow=0,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)
        zbuf = np.asarray(zbuf, dtype=np.float32).reshape(self.height, self.width)
        depth = FAR * NEAR / (FAR - (FAR - NEAR) * zbuf)  # (H, W) z-depth in metres
        depth[zbuf >= 1.0] = 0.0  # nothing hit: 0 = invalid
        seg = np.asarray(seg, dtype=np.int32).reshape(self.height, self.width)
        return rgba[..., :3].copy(), depth.astype(np.float32), seg


def project(points: np.ndarray, intrinsics: np.ndarray, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel coordinates (N, 2) (u, v) and depth (N,)."""
    world_to_cam = np.linalg.inv(cam_to_world)
    pts = np.asarray(points, dtype=np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]  # (N, 3)
    uvw = pts @ np.asarray(intrinsics, dtype=np.float64).T  # (N, 3)
    return uvw[:, :2] / uvw[:, 2:3], pts[:, 2]
