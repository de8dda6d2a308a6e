"""Which world points a camera sees: projection through the calibration plus a depth-based occlusion test.

A cloud that did not come from this camera's own depth (fused from several views, another camera's
frame, a PLY file without pixel coordinates) needs each point's pixel in this camera and whether it
is seen there. :func:`visible_points` projects the points (OpenCV convention, ``cam_to_world``; see
:func:`project_points`) and compares each point's depth along the camera axis with the camera's
depth map at its (nearest) pixel: a point more than ``tolerance + rel_tolerance * depth`` behind
the surface there is occluded. A pixel without a depth reading (0 or not finite: no surface, or an
invalid sensor reading) cannot confirm a point, so such points count as not visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._correspondence import project_points

__all__ = ["Visibility", "visible_points"]


@dataclass
class Visibility:
    """Per point: ``uv`` (N, 2) pixel (u = column, v = row), ``z`` (N,) depth along the camera axis,
    ``in_frame`` (in front of the camera, inside the image), ``visible`` (in frame and not occluded)."""

    uv: np.ndarray
    z: np.ndarray
    in_frame: np.ndarray
    visible: np.ndarray

    @property
    def occluded(self) -> np.ndarray:
        """In frame, but behind the depth map's surface (or on a pixel without a depth reading)."""
        return self.in_frame & ~self.visible


def visible_points(
    xyz, intrinsics, cam_to_world, depth, tolerance: float = 0.005, rel_tolerance: float = 0.01
) -> Visibility:
    """Project world points ``xyz`` (N, 3) into the camera and test them against its ``depth`` (H, W) metres."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"visible_points: depth must be (H, W) metres, got shape {depth.shape}")
    if tolerance < 0 or rel_tolerance < 0:
        raise ValueError(f"visible_points: tolerance={tolerance}, rel_tolerance={rel_tolerance}; expected >= 0")
    uv, z = project_points(xyz, intrinsics, cam_to_world, check=False)
    h, w = depth.shape
    col, row = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    in_frame = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    surface = np.zeros(len(z))
    surface[in_frame] = depth[row[in_frame].astype(int), col[in_frame].astype(int)]
    reading = np.isfinite(surface) & (surface > 0)
    visible = in_frame & reading & (z <= surface + tolerance + rel_tolerance * surface)
    return Visibility(uv, z, in_frame, visible)
