"""Point clouds: back-projection against projection, object ids from masks, PLY round trips."""

import numpy as np
import pytest

from policylens.data.pointcloud import PointCloud, backproject, read_ply, write_ply
from policylens.sim.pybullet import SimEnv, project


@pytest.fixture(scope="module")
def rendered():
    with SimEnv("reach", seed=0, image_size=64) as env:
        obs = env.reset(seed=4)
        return obs, env.calibration(), env.scene.object_positions()


def test_backprojection_inverts_projection_at_exact_uv(rendered):
    obs, cal, centres = rendered
    for cam in ("varied_camera_1", "hand_camera"):
        K, T = cal[cam]["intrinsics"], cal[cam]["extrinsics"]
        cloud = backproject(obs["depth"][cam], K, T, obs["images"][cam], obs["segmentation"][cam])
        assert len(cloud) == int((obs["depth"][cam] > 0).sum())
        uv, _ = project(cloud.xyz.astype(np.float64), K, T)
        np.testing.assert_allclose(uv, cloud.uv, atol=2e-3)  # float32 xyz
        u, v = cloud.uv[:, 0], cloud.uv[:, 1]
        np.testing.assert_array_equal(cloud.rgb, obs["images"][cam][v, u])
        np.testing.assert_array_equal(cloud.object_id, obs["segmentation"][cam][v, u])
    # points of object i cluster around its centre (within its size + a margin)
    cloud = backproject(
        obs["depth"]["varied_camera_1"],
        cal["varied_camera_1"]["intrinsics"],
        cal["varied_camera_1"]["extrinsics"],
        segmentation=obs["segmentation"]["varied_camera_1"],
    )
    for i, c in enumerate(centres):
        pts = cloud.xyz[cloud.object_id == 10 + i]
        assert len(pts) > 0 and np.linalg.norm(pts - c, axis=1).max() < 0.06


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    rng = np.random.default_rng(0)
    n = 50
    cloud = PointCloud(
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.integers(0, 256, (n, 3)),
        rng.integers(0, 640, (n, 2)),
        rng.integers(-1, 20, n),
    )
    path = tmp_path / f"c_{binary}.ply"
    write_ply(path, cloud, binary=binary)
    back = read_ply(path)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)
    np.testing.assert_array_equal(back.uv, cloud.uv)
    np.testing.assert_array_equal(back.object_id, cloud.object_id)
    assert (b"binary_little_endian" in path.read_bytes()[:80]) == binary


def test_ply_reader_accepts_plain_xyz_and_rejects_garbage(tmp_path):
    p = tmp_path / "plain.ply"
    p.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
        "property double z\nend_header\n1 2 3\n4 5 6\n"
    )
    cloud = read_ply(p)
    np.testing.assert_array_equal(cloud.xyz, [[1, 2, 3], [4, 5, 6]])
    assert (cloud.object_id == -1).all() and (cloud.uv == -1).all()
    bad = tmp_path / "bad.ply"
    bad.write_text("not a ply\n")
    from policylens.data import EpisodeFormatError

    with pytest.raises(EpisodeFormatError, match="first line"):
        read_ply(bad)
