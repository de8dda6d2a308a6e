"""Do points land in their own object's patch? An exact check of point <-> patch correspondence.

A simulated frame gives depth, segmentation and calibration. Its points (back-projected with
:func:`policylens.data.pointcloud.backproject`) are projected back through the calibration with
:func:`project_points` and looked up on an encoder's patch grid through its
:class:`PreprocessRecord`. A patch's label is the majority segmentation label of the frame pixels
whose centres land in it (pixels on padding bars or cropped away do not vote). A point is
*away from boundaries* when no pixel within ``margin`` pixels of its own pixel (Chebyshev
distance, centre to centre: the ``(2 * margin + 1)``-square around it) carries another label.
:func:`point_patch_agreement` reports the share of such points whose patch label is their own.

Camera convention (OpenCV, as ``sim.pybullet``): ``K`` (3, 3) with x right, y down, z forward; pixel
``(u, v)`` = (column, row) with centres at integers; ``cam_to_world`` (4, 4) maps camera
coordinates to the world. An OpenGL pose (y up, looking down -z) puts most points behind the
camera and world-to-camera sends them out of the frame; both raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ._record import PreprocessRecord
from ._sampling import uv_to_grid

__all__ = ["CorrespondenceStats", "interior_mask", "patch_labels", "point_patch_agreement", "project_points"]


def project_points(xyz, intrinsics, cam_to_world, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel uv (N, 2) float64 and z-depth (N,), OpenCV convention. ``check``:
    raise when most points are behind the camera (the sign of an OpenGL or world-to-camera pose);
    pass False for clouds that may legitimately lie mostly behind it (other views)."""
    xyz, K, T = (np.asarray(a, dtype=np.float64) for a in (xyz, intrinsics, cam_to_world))
    if xyz.ndim != 2 or xyz.shape[1] != 3 or K.shape != (3, 3) or T.shape != (4, 4):
        raise ValueError(
            f"project_points: expected xyz (N, 3), intrinsics (3, 3), cam_to_world (4, 4); got {xyz.shape}, "
            f"{K.shape}, {T.shape}"
        )
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise ValueError("project_points: cam_to_world's rotation is not a proper rotation; pass a rigid (4, 4) pose")
    cam = (xyz - T[:3, 3]) @ R  # (N, 3) = R^T (x - t): world -> camera
    if check and len(cam) and (cam[:, 2] <= 0).mean() > 0.5:
        raise ValueError(
            f"project_points: {(cam[:, 2] <= 0).mean():.0%} of the points are behind the camera (z <= 0). "
            "cam_to_world is probably world-to-camera (pass its inverse) or an OpenGL pose (y up, -z forward: "
            "multiply by diag(1, -1, -1, 1)); policylens expects the OpenCV camera-to-world."
        )
    uvw = cam @ K.T  # (N, 3)
    return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]


def interior_mask(segmentation, margin: int = 2) -> np.ndarray:
    """(H, W) bool: no other label within ``margin`` pixels (Chebyshev). Off-frame does not count."""
    if margin < 0:
        raise ValueError(f"interior_mask: margin must be >= 0 pixels, got {margin}")
    seg = torch.as_tensor(np.asarray(segmentation, dtype=np.float64))[None, None]  # (1, 1, H, W)
    k = 2 * margin + 1
    hi = F.max_pool2d(seg, k, stride=1, padding=margin)
    lo = -F.max_pool2d(-seg, k, stride=1, padding=margin)
    return ((hi == seg) & (lo == seg))[0, 0].numpy()


def patch_labels(segmentation, record: PreprocessRecord) -> np.ndarray:
    """(rows * cols,) majority label of each patch over the frame pixels landing in it (-1: none)."""
    seg = np.asarray(segmentation)
    if seg.shape != tuple(record.original_size):
        raise ValueError(
            f"patch_labels: segmentation is {seg.shape} but the record ({record.encoder or 'unnamed'}) was made "
            f"for frames of {tuple(record.original_size)}; build the record for this camera's frame size."
        )
    v, u = np.mgrid[0 : seg.shape[0], 0 : seg.shape[1]]
    pts = uv_to_grid(np.stack([u.ravel(), v.ravel()], 1), record)
    labels = seg.ravel().astype(np.int64)
    keep = pts.valid.numpy()
    idx, lab = pts.index.numpy()[keep], labels[keep]
    rows, cols = record.grid_size
    n_labels = int(labels.max()) + 1 if len(labels) else 1
    votes = np.zeros((rows * cols, n_labels), np.int64)
    np.add.at(votes, (idx, lab), 1)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1)


@dataclass(frozen=True)
class CorrespondenceStats:
    """``share`` = ``n_agree / n_checked``: valid points away from boundaries whose patch label is
    their own. ``n_points`` in all, ``n_valid`` on the grid, ``n_checked`` also away from boundaries."""

    share: float
    n_points: int
    n_valid: int
    n_checked: int
    n_agree: int


def point_patch_agreement(
    xyz, object_id, intrinsics, cam_to_world, segmentation, record: PreprocessRecord, margin: int = 2
) -> CorrespondenceStats:
    """Project world points ``xyz`` (N, 3) with labels ``object_id`` (N,) into the frame, look
    each up on ``record``'s grid and compare its patch's majority label with its own. The points
    are the frame's own (e.g. back-projected from its depth): fewer than half landing in the
    frame means a calibration mistake and raises."""
    seg = np.asarray(segmentation)
    labels = patch_labels(seg, record)
    uv, _ = project_points(xyz, intrinsics, cam_to_world)
    pts = uv_to_grid(uv, record)
    pix = np.rint(uv).astype(np.int64)
    H, W = seg.shape
    in_frame = (pix[:, 0] >= 0) & (pix[:, 0] < W) & (pix[:, 1] >= 0) & (pix[:, 1] < H)
    if len(uv) and in_frame.mean() < 0.5:
        raise ValueError(
            f"point_patch_agreement: only {in_frame.mean():.0%} of the points project into the {H}x{W} frame they "
            "should come from. cam_to_world is probably world-to-camera (pass its inverse), or the intrinsics / "
            "segmentation belong to another camera."
        )
    valid = pts.valid.numpy() & in_frame
    interior = np.zeros(len(uv), bool)
    interior[valid] = interior_mask(seg, margin)[pix[valid, 1], pix[valid, 0]]
    checked = valid & interior
    agree = checked & (labels[np.where(valid, pts.index.numpy(), 0)] == np.asarray(object_id))
    n_checked, n_agree = int(checked.sum()), int(agree.sum())
    share = n_agree / n_checked if n_checked else float("nan")
    return CorrespondenceStats(share, len(uv), int(valid.sum()), n_checked, n_agree)
