"""``ingest_ply`` / ``ingest_depth``: stored points equal the direct computation (binary and ASCII PLY
with float uv and 4-d features, PLY from ``write_ply``, depth back-projection), fixed size by subsample /
pad with a validity mask, clear errors for malformed files and missing cameras."""

from pathlib import Path

import numpy as np
import pytest
import torch

from policylens.align import depth_cloud, fix_points, ingest_depth, ingest_ply, ply_files, read_ply_points
from policylens.data import CameraCalibration, Episode, EpisodeFormatError
from policylens.data.pointcloud import PointCloud, backproject, write_ply
from policylens.store import open_store

PROPS = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
PROPS += [("u", "f4"), ("v", "f4"), ("object_id", "i4")] + [(f"feat_{i}", "f4") for i in range(4)]
PLY_TYPES = {"f4": "float", "u1": "uchar", "i4": "int"}


def cloud(m, seed):
    rng = np.random.default_rng(seed)
    rec = np.zeros(m, np.dtype([(n, "<" + t) for n, t in PROPS]))
    for n, t in PROPS:
        rec[n] = rng.integers(0, 200, m) if t != "f4" else rng.normal(size=m).astype(np.float32)
    rec["u"], rec["v"] = rng.uniform(0, 40, m), rng.uniform(0, 30, m)
    return rec


def write(path: Path, rec, binary=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "binary_little_endian" if binary else "ascii"
    head = ["ply", f"format {fmt} 1.0", f"element vertex {len(rec)}"]
    head += [f"property {PLY_TYPES[t]} {n}" for n, t in PROPS] + ["end_header"]
    body = rec.tobytes() if binary else "\n".join(" ".join(repr(v.item()) for v in r) for r in rec).encode() + b"\n"
    path.write_bytes(("\n".join(head) + "\n").encode() + body)


def direct(rec) -> dict:
    col = lambda ks: np.stack([rec[k] for k in ks], 1)  # noqa: E731
    feats = col([f"feat_{i}" for i in range(4)])
    return {"xyz": col("xyz"), "rgb": col(("red", "green", "blue")), "uv": col("uv"), "object_id": rec["object_id"]} | {
        "features": feats
    }


@pytest.mark.parametrize("binary", [True, False])
def test_ply_ingest_equals_direct_read_with_subsample_and_pad(tmp_path, binary):
    recs = {(0, 0): cloud(50, 1), (0, 1): cloud(7, 2), (2, 5): cloud(20, 3)}
    for (e, t), rec in recs.items():
        write(tmp_path / f"c/ep{e}/{t:04d}.ply", rec, binary)
    pattern = str(tmp_path / "c/ep{episode}/{step:04d}.ply")
    assert [(e, t) for e, t, _ in ply_files(pattern)] == sorted(recs)
    m = ingest_ply(pattern, tmp_path / "s", points=16, seed=3, camera="cam", frame_size=(30, 40), progress=False)
    assert m["meta"]["extra"]["align"]["frame_size"] == [30, 40] and m["kind"] == "point_cloud"
    assert m["fields"]["xyz"] == {"shape": [16, 3], "dtype": "float32", "role": "feature"}
    b = open_store(tmp_path / "s").get_batch(slice(None))
    assert b["episode"].tolist() == [[0], [0], [2]] and b["step"].tolist() == [[0], [1], [5]]
    for row, (e, t) in enumerate(sorted(recs)):
        d = direct(recs[(e, t)])
        np.testing.assert_array_equal(read_ply_points(tmp_path / f"c/ep{e}/{t:04d}.ply")["features"], d["features"])
        want = fix_points(d, 16, np.random.default_rng([3, e, t]))
        np.testing.assert_array_equal(b["xyz"][row].numpy(), want["xyz"])
        for key in ("rgb", "uv", "valid", "object_id"):
            np.testing.assert_array_equal(b[key][row].numpy(), want[key])
        np.testing.assert_array_equal(b["point_features"][row].numpy(), want["features"])
    valid = b["valid"][1]  # 7 points padded to 16
    assert (
        valid.sum() == 7
        and not valid[7:].any()
        and (b["uv"][1, 7:] == -1).all()
        and (b["object_id"][1, 7:] == -1).all()
    )
    assert b["valid"][0].all() and len(set(b["xyz"][0, :, 0].tolist())) == 16  # 16 distinct of 50


def test_fix_points_subsample_is_sorted_and_seeded():
    c = {"xyz": np.arange(30.0).reshape(10, 3), "uv": np.zeros((10, 2), np.float32)}
    a = fix_points(c, 4, np.random.default_rng([0, 1, 2]))
    b = fix_points(c, 4, np.random.default_rng([0, 1, 2]))
    np.testing.assert_array_equal(a["xyz"], b["xyz"])
    assert (np.diff(a["xyz"][:, 0]) > 0).all() and a["valid"].all()


@pytest.mark.parametrize("binary", [True, False])
def test_write_ply_clouds_without_features(tmp_path, binary):
    pc = PointCloud(
        np.random.default_rng(0).normal(size=(5, 3)), np.full((5, 3), 7), np.arange(10).reshape(5, 2), np.arange(5)
    )
    write_ply(tmp_path / "e0_s3.ply", pc, binary=binary)
    ingest_ply(str(tmp_path / "e{episode}_s{step}.ply"), tmp_path / "s", points=5, progress=False)
    b = open_store(tmp_path / "s")[0]
    assert "point_features" not in b
    np.testing.assert_array_equal(b["xyz"].numpy(), pc.xyz)
    np.testing.assert_array_equal(b["uv"].numpy(), pc.uv.astype(np.float32))
    assert b["rgb"].tolist() == [[7, 7, 7]] * 5 and b["object_id"].tolist() == list(range(5))


def depth_episodes(n_steps=3, size=(12, 16)):
    rng = np.random.default_rng(0)
    depth = [rng.uniform(0.5, 2.0, size).astype(np.float32) for _ in range(n_steps)]
    for d in depth:
        d[0, :4] = 0  # invalid pixels are dropped
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n_steps)]
    masks = [rng.integers(0, 5, size, dtype=np.uint8) for _ in range(n_steps)]
    K = np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]])
    ext = np.stack([np.eye(4) for _ in range(n_steps)])
    ext[:, :3, 3] = rng.normal(size=(n_steps, 3))  # a moving camera
    z = np.zeros((n_steps, 7))
    ep = Episode(Path("mem/ep0"), "", z, z, {"cam": frames, "other": frames}, {"cam": CameraCalibration(K, ext)})
    ep.depths, ep.masks = {"cam": depth}, {"cam": masks}
    return [ep]


def test_depth_ingest_equals_backprojection(tmp_path):
    eps = depth_episodes()
    ep = eps[0]
    m = ingest_depth(eps, tmp_path / "s", camera="cam", points=150, stride=1, seed=5, progress=False)
    assert m["meta"]["extra"]["align"]["frame_size"] == [12, 16] and m["meta"]["extra"]["align"]["version"] == 2
    b = open_store(tmp_path / "s").get_batch(slice(None))
    for t in range(3):
        cal = ep.calibration["cam"]
        pc = backproject(
            ep.depths["cam"][t], cal.intrinsics, cal.extrinsics[t], ep.cameras["cam"][t], ep.masks["cam"][t]
        )
        d = depth_cloud(ep, "cam", t)
        np.testing.assert_array_equal(d["xyz"], pc.xyz)
        np.testing.assert_array_equal(d["uv"], pc.uv.astype(np.float32))
        want = fix_points(d, 150, np.random.default_rng([5, 0, t]))
        np.testing.assert_array_equal(b["xyz"][t].numpy(), want["xyz"])
        for key in ("rgb", "uv", "valid", "object_id"):
            np.testing.assert_array_equal(b[key][t].numpy(), want[key])
    assert b["xyz"].dtype == torch.float32 and b["uv"].dtype == torch.float32


def test_malformed_ply_and_mismatches_give_clear_errors(tmp_path):
    write(tmp_path / "a/e0_s0.ply", cloud(5, 0))
    data = (tmp_path / "a/e0_s0.ply").read_bytes()
    (tmp_path / "t").mkdir()
    (tmp_path / "t/e0_s0.ply").write_bytes(data[:-10])  # truncated
    with pytest.raises(EpisodeFormatError, match=r"e0_s0.ply.*truncated"):
        ingest_ply(str(tmp_path / "t/e{episode}_s{step}.ply"), tmp_path / "s1", progress=False)
    bad = data.replace(b"feat_3", b"feat_7")
    (tmp_path / "g").mkdir()
    (tmp_path / "g/e0_s0.ply").write_bytes(bad)
    with pytest.raises(EpisodeFormatError, match="without gaps"):
        read_ply_points(tmp_path / "g/e0_s0.ply")
    pc = PointCloud(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2))
    write_ply(tmp_path / "a/e0_s1.ply", pc)  # no features beside one with 4
    with pytest.raises(EpisodeFormatError, match="feature dims differ"):
        ingest_ply(str(tmp_path / "a/e{episode}_s{step}.ply"), tmp_path / "s2", progress=False)
    with pytest.raises(ValueError, match=r"\{episode\} and \{step\}"):
        ply_files(str(tmp_path / "a/e{episode}.ply"))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        ply_files(str(tmp_path / "none/e{episode}_s{step}.ply"))
    eps = depth_episodes()
    with pytest.raises(EpisodeFormatError, match="'other' has no depth"):
        ingest_depth(eps, tmp_path / "s3", camera="other", progress=False)
    with pytest.raises(KeyError, match=r"--camera 'wrist'"):
        ingest_depth(eps, tmp_path / "s4", camera="wrist", progress=False)
