"""``visible_points``: projection plus a depth-based occlusion test on a simulated frame — a camera sees its
own back-projected points, not the same points pushed behind the surface, and another camera sees some."""

import numpy as np
import pytest

from policylens.align import visible_points
from policylens.data.pointcloud import backproject

CAMS = ("varied_camera_1", "varied_camera_2")


@pytest.fixture(scope="module")
def views():
    from policylens.sim.pybullet import SimEnv

    with SimEnv("reach", seed=0, image_size=112, cameras=CAMS) as env:
        obs = env.reset(seed=3)
        cal = env.calibration()
    return {c: (obs["depth"][c], cal[c]["intrinsics"], cal[c]["extrinsics"]) for c in CAMS}


def test_own_points_are_visible_and_pushed_points_occluded(views):
    depth, K, T = views[CAMS[0]]
    cloud = backproject(depth, K, T)
    vis = visible_points(cloud.xyz, K, T, depth)
    assert vis.in_frame.all() and vis.visible.mean() > 0.999
    np.testing.assert_allclose(vis.uv, cloud.uv, atol=1e-3)
    rays = cloud.xyz - T[:3, 3]
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    behind = visible_points(cloud.xyz + 0.05 * rays, K, T, depth)  # 5 cm further along each ray
    assert behind.in_frame.mean() > 0.95 and behind.visible.mean() < 0.01 and behind.occluded.mean() > 0.95
    front = visible_points(cloud.xyz - 0.05 * rays, K, T, depth)  # 5 cm nearer: nothing in front of them
    assert front.visible[front.in_frame].mean() > 0.999


def test_another_camera_sees_part_of_the_cloud(views):
    depth_a, K_a, T_a = views[CAMS[0]]
    depth_b, K_b, T_b = views[CAMS[1]]
    cloud = backproject(depth_a, K_a, T_a)
    vis = visible_points(cloud.xyz, K_b, T_b, depth_b)
    assert 0.05 < vis.visible.mean() < 0.99  # the table top both see; what camera A alone sees is hidden or off-frame
    u, v = np.rint(vis.uv[vis.visible]).astype(int).T
    surface, z = depth_b[v, u], vis.z[vis.visible]
    assert (surface >= z - 0.005 - 0.01 * surface).all()  # never behind camera B's own surface
    assert (np.abs(surface - z) < 0.05).mean() > 0.9  # mostly the surface B measured (silhouette pixels aside)


def test_no_depth_reading_is_not_visible_and_bad_input_is_named(views):
    depth, K, T = views[CAMS[0]]
    cloud = backproject(depth, K, T)
    blank = np.zeros_like(depth)
    vis = visible_points(cloud.xyz[:50], K, T, blank)
    assert vis.in_frame.all() and not vis.visible.any()
    with pytest.raises(ValueError, match=r"depth must be \(H, W\)"):
        visible_points(cloud.xyz, K, T, depth[None])
    behind_camera = T[:3, 3] - (cloud.xyz[:20] - T[:3, 3])  # mirrored through the camera centre
    assert not visible_points(behind_camera, K, T, depth).in_frame.any()
