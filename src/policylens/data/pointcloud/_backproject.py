"""Back-project depth images to world-frame point clouds that keep each point's exact pixel.

Pixel (u, v) = (column, row) with OpenCV intrinsics K: the camera-frame point is
``z * K^-1 [u, v, 1]``, then ``cam_to_world`` maps it to the world.  Depth is z-depth in metres;
pixels with depth <= 0 (or non-finite) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PointCloud:
    """N points: xyz (N, 3) float32, rgb (N, 3) uint8, uv (N, 2) int32 (u=col, v=row), object_id (N,) int32."""

    xyz: np.ndarray
    rgb: np.ndarray
    uv: np.ndarray
    object_id: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.xyz)
        self.xyz = np.asarray(self.xyz, dtype=np.float32).reshape(n, 3)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(n, 3)
        self.uv = np.asarray(self.uv, dtype=np.int32).reshape(n, 2)
        self.object_id = np.asarray(self.object_id, dtype=np.int32).reshape(n)

    def __len__(self) -> int:
        return len(self.xyz)


def backproject(
    depth: np.ndarray,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    rgb: np.ndarray | None = None,
    segmentation: np.ndarray | None = None,
    stride: int = 1,
) -> PointCloud:
    """Depth (H, W) metres -> PointCloud in the world frame; every ``stride``-th pixel."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    H, W = depth.shape
    for name, arr, shape in (("rgb", rgb, (H, W, 3)), ("segmentation", segmentation, (H, W))):
        if arr is not None and np.shape(arr) != shape:
            raise ValueError(f"{name} must have shape {shape} to match depth, got {np.shape(arr)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    v, u = np.mgrid[0:H:stride, 0:W:stride]  # (h, w) rows, cols
    z = depth[v, u]
    keep = np.isfinite(z) & (z > 0)
    u, v, z = u[keep], v[keep], z[keep]  # (N,)
    K = np.asarray(intrinsics, dtype=np.float64)
    x = (u - K[0, 2]) * z / K[0, 0]
    y = (v - K[1, 2]) * z / K[1, 1]
    cam = np.stack([x, y, z], axis=1)  # (N, 3) camera frame
    T = np.asarray(cam_to_world, dtype=np.float64)
    world = cam @ T[:3, :3].T + T[:3, 3]  # (N, 3)
    colours = np.zeros((len(u), 3), np.uint8) if rgb is None else np.asarray(rgb)[v, u]
    ids = np.full(len(u), -1, np.int32) if segmentation is None else np.asarray(segmentation)[v, u]
    return PointCloud(world, colours, np.stack([u, v], axis=1), ids)
