"""Points of a simulated frame land in patches of their own object, for every preprocessing path;
calibration misuse (OpenGL axes, world-to-camera) is caught.

The frame: a 112 x 112 render of the ``reach`` scene (depth, segmentation, OpenCV calibration),
cut to a wide 84 x 112 and a tall 112 x 70 view (the crop moves the principal point), so crop and
pad paths really crop and pad. Shares measured when written: >= 0.992 on every path (0.992 - 0.9997
on 16 x 16 / 14 x 14 grids, 1.0 on the 518 / 504 / 512 grids)."""

import numpy as np
import pytest

from policylens.align._correspondence import interior_mask, patch_labels, point_patch_agreement, project_points
from policylens.align._record import PreprocessRecord
from policylens.data.pointcloud import backproject

CAM = "varied_camera_1"
VIEWS = {"wide": (14, 0, 84, 112), "tall": (0, 14, 112, 70)}
PATHS = {
    "resize_224": lambda fs: PreprocessRecord.resize(fs, 224, 14, 1),
    "centre_crop_224": lambda fs: PreprocessRecord.centre_crop(fs, 224, 14, 1),
    "pad_224": lambda fs: PreprocessRecord.pad(fs, 224, 14, 1),
    "vggt_crop": lambda fs: PreprocessRecord.vggt(fs, "crop"),
    "vggt_pad": lambda fs: PreprocessRecord.vggt(fs, "pad"),
    "depth_anything_3": PreprocessRecord.depth_anything_3,
    "croco_512": lambda fs: PreprocessRecord.croco(fs, 512),
    "croco_224": lambda fs: PreprocessRecord.croco(fs, 224),
}


@pytest.fixture(scope="module")
def frame():
    from policylens.sim.pybullet import SimEnv

    with SimEnv("reach", seed=0, image_size=112, cameras=(CAM,)) as env:
        obs = env.reset(seed=3)
        cal = env.calibration()[CAM]
    return obs["depth"][CAM], obs["segmentation"][CAM], cal["intrinsics"], cal["extrinsics"]


def _view(frame, name):
    depth, seg, K, T = frame
    top, left, h, w = VIEWS[name]
    K = K.copy()
    K[0, 2] -= left
    K[1, 2] -= top
    seg = seg[top : top + h, left : left + w]
    cloud = backproject(depth[top : top + h, left : left + w], K, T, segmentation=seg)
    return cloud, seg, K, T


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("path", PATHS)
def test_points_away_from_boundaries_land_in_their_own_objects_patch(frame, view, path):
    cloud, seg, K, T = _view(frame, view)
    rec = PATHS[path](seg.shape)
    stats = point_patch_agreement(cloud.xyz, cloud.object_id, K, T, seg, rec, margin=2)
    assert stats.n_checked > 3000 and stats.n_valid <= stats.n_points == len(cloud)
    assert stats.share >= 0.99, stats


def test_projection_inverts_backprojection_exactly(frame):
    cloud, _, K, T = _view(frame, "wide")
    uv, depth = project_points(cloud.xyz, K, T)
    assert np.abs(uv - cloud.uv).max() < 1e-3 and (depth > 0).all()


def test_opengl_pose_and_world_to_camera_are_caught(frame):
    cloud, seg, K, T = _view(frame, "wide")
    rec = PreprocessRecord.vggt(seg.shape, "pad")
    gl = T @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL axes: y up, looking down -z
    with pytest.raises(ValueError, match="OpenGL"):
        point_patch_agreement(cloud.xyz, cloud.object_id, K, gl, seg, rec)
    with pytest.raises(ValueError, match="world-to-camera"):
        point_patch_agreement(cloud.xyz, cloud.object_id, K, np.linalg.inv(T), seg, rec)
    flipped_y = T @ np.diag([-1.0, -1.0, 1.0, 1.0])  # a proper rotation that keeps z: only the share shows it
    stats = point_patch_agreement(cloud.xyz, cloud.object_id, K, flipped_y, seg, rec)
    assert stats.share < 0.9


def test_interior_mask_and_patch_labels():
    seg = np.zeros((28, 28), np.uint8)
    seg[:, 14:] = 5
    inner = interior_mask(seg, margin=2)
    assert inner[:, :12].all() and not inner[:, 12:16].any() and inner[:, 16:].all()
    assert interior_mask(seg, margin=0).all()
    rec = PreprocessRecord.resize((28, 28), 28, 14)
    assert patch_labels(seg, rec).tolist() == [0, 5, 0, 5]
    with pytest.raises(ValueError, match=r"made for frames of \(28, 28\)"):
        patch_labels(np.zeros((20, 28)), rec)
    with pytest.raises(ValueError, match="not a proper rotation"):
        project_points(np.zeros((1, 3)), np.eye(3), np.diag([1.0, 1.0, -1.0, 1.0]))


@pytest.mark.parametrize("fit", ["resize", "centre_crop", "pad"])
def test_full_224_frame_with_a_margin_at_the_patch_scale(fit):
    """On a full 224 px frame a 14 px patch spans 14 frame pixels: 2 px from a boundary is still inside a
    mixed patch, 4 px (more than a quarter patch) is not, and there the share is >= 99%."""
    from policylens.sim.pybullet import SimEnv

    with SimEnv("reach", seed=0, image_size=224, cameras=(CAM,)) as env:
        obs = env.reset(seed=3)
        cal = env.calibration()[CAM]
    depth, seg, K, T = obs["depth"][CAM], obs["segmentation"][CAM], cal["intrinsics"], cal["extrinsics"]
    cloud = backproject(depth, K, T, segmentation=seg)
    rec = getattr(PreprocessRecord, fit)(seg.shape, 224, 14)
    assert point_patch_agreement(cloud.xyz, cloud.object_id, K, T, seg, rec, margin=4).share >= 0.99
    assert point_patch_agreement(cloud.xyz, cloud.object_id, K, T, seg, rec, margin=2).share < 0.99
