"""Depth and segmentation kept end to end: ``make_training_episodes(depth=True)`` and the LeRobot writer / reader
(depth as LeRobot's raw depth images: uint16 mm TIFF, flagged ``is_depth_map``; round trip within 0.5 mm)."""

import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from policylens.data import EpisodeFormatError
from policylens.data.droid import open_episode
from policylens.data.lerobot import LeRobotWriter, open_dataset
from policylens.sim.pybullet import SimEnv, layout_seed, make_training_episodes
from policylens.sim.pybullet._record import record_episode

CAMS = ("hand_camera", "varied_camera_1")
DATA = "data/chunk-000/file-000.parquet"
HALF_MM = 0.5e-3 + 1e-6  # rounding to 1 mm, plus float32 slack


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One rendered sim episode (32 px, two cameras) and the LeRobot dataset written from it."""
    with SimEnv("reach", seed=0, image_size=32, render=True, cameras=CAMS) as env:
        rec = record_episode(env, layout_seed(0, 0))
    root = tmp_path_factory.mktemp("lerobot_depth")
    writer = LeRobotWriter(root, fps=rec["fps"], depth=True)
    writer.add_episode(rec)
    return rec, writer.finalize()


def test_training_episodes_keep_depth_labels_and_calibration():
    kw = {"render": True, "image_size": 32, "cameras": CAMS, "render_stride": 2, "progress": False}
    ep = make_training_episodes("reach", 1, seed=2, depth=True, **kw)[0]
    plain = make_training_episodes("reach", 1, seed=2, **kw)[0]
    assert "depth" not in plain and "segmentation" not in plain  # off by default: memory as before
    T, n = len(ep["action"]), len(ep["image_steps"])
    for cam in CAMS:
        np.testing.assert_array_equal(ep["images"][cam], plain["images"][cam])
        d, s = ep["depth"][cam], ep["segmentation"][cam]
        assert d.shape == s.shape == (n, 32, 32) and d.dtype == np.float32 and s.dtype == np.uint8
        assert d.max() < 4.0 and (d[d > 0] > 0.02).all()  # metres inside the (near, far) planes
        assert ep["intrinsics"][cam].shape == (3, 3) and ep["extrinsics"][cam].shape == (T, 4, 4)
    assert set(np.unique(ep["segmentation"]["varied_camera_1"])) >= {1, 2}  # table and robot seen
    assert not np.allclose(ep["extrinsics"]["hand_camera"][0], ep["extrinsics"]["hand_camera"][-1])  # it moves
    with pytest.raises(ValueError, match="render=True"):
        make_training_episodes("reach", 1, depth=True, progress=False)


def test_lerobot_round_trip_keeps_depth_and_masks(recorded):
    rec, root = recorded
    ep = open_dataset(root)[0]
    assert sorted(ep.camera_names) == sorted(CAMS)  # depth features are not RGB cameras
    for cam in CAMS:
        for t in range(len(ep)):
            got, want = ep.depth(cam, t), rec["depth"][cam][t]
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=HALF_MM, rtol=0)
            np.testing.assert_array_equal(got == 0, want == 0)  # invalid stays invalid
            np.testing.assert_array_equal(ep.mask(cam, t), rec["segmentation"][cam][t])
        np.testing.assert_allclose(ep.calibration[cam].intrinsics, rec["intrinsics"][cam])
    info = json.loads((root / "meta/info.json").read_text())
    feat = info["features"]["observation.images.hand_camera_depth"]
    assert feat["dtype"] == "image" and feat["shape"] == [32, 32, 1]
    assert feat["info"] == {"is_depth_map": True, "depth_unit": "mm"}
    stats = json.loads((root / "meta/stats.json").read_text())["observation.images.hand_camera_depth"]
    mm = np.rint(rec["depth"]["hand_camera"] * 1000)
    assert np.asarray(stats["max"]).shape == (1, 1, 1) and stats["max"][0][0][0] == mm.max()  # stored unit, mm
    cell = pq.read_table(root / DATA).column("observation.images.hand_camera_depth")[0].as_py()
    with Image.open(io.BytesIO(cell["bytes"])) as im:  # what LeRobot decodes: a 16-bit TIFF
        assert im.format == "TIFF" and im.mode == "I;16"


@pytest.fixture(scope="module")
def lerobot_dir(tmp_path_factory):
    """The conftest's reach episodes (same seed and size), written with depth (off by default)."""
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("lerobot_with_depth")
    return generate_episodes(
        "reach", 2, root, seed=0, fmt="lerobot", image_size=64, progress=False, lerobot_depth=True
    )[0]


def test_depth_matches_the_droid_copy(lerobot_dir, droid_dir):
    ds = open_dataset(lerobot_dir)
    for i, ep in enumerate(ds):
        ref = open_episode(droid_dir[i])
        for cam in ref.camera_names:
            for t in (0, len(ref) - 1):
                np.testing.assert_allclose(ep.depth(cam, t), ref.depth(cam, t), atol=1e-6)


def test_writer_without_depth_and_other_units(recorded, tmp_path):
    rec, root = recorded
    bare = LeRobotWriter(tmp_path / "bare", fps=rec["fps"], depth=False)
    bare.add_episode(rec)
    ep = open_dataset(bare.finalize())[0]
    assert ep.depth("hand_camera", 0) is None and ep.mask("hand_camera", 0) is not None

    copy = tmp_path / "metres"  # float32 metres without depth_unit: the pixel type decides, as in LeRobot
    shutil.copytree(root, copy)
    table = pq.read_table(copy / DATA)
    key = "observation.images.hand_camera_depth"

    def tiff(a):
        buf = io.BytesIO()
        Image.fromarray(a.astype(np.float32)).save(buf, format="TIFF")
        return {"bytes": buf.getvalue(), "path": None}

    col = pa.array([tiff(d) for d in rec["depth"]["hand_camera"]], table.schema.field(key).type)
    pq.write_table(table.set_column(table.column_names.index(key), key, col), copy / DATA)
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"][key]["info"].pop("depth_unit")
    (copy / "meta/info.json").write_text(json.dumps(info))
    np.testing.assert_array_equal(open_dataset(copy)[0].depth("hand_camera", 3), rec["depth"]["hand_camera"][3])

    info["features"][key]["info"]["depth_unit"] = "cm"
    (copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(EpisodeFormatError, match=r"info\.json.*depth_unit='cm'"):
        open_dataset(copy)


def test_broken_depth_cell_names_the_column(recorded, tmp_path):
    _, root = recorded
    copy = tmp_path / "broken"
    shutil.copytree(root, copy)
    table = pq.read_table(copy / DATA)
    key = "observation.images.varied_camera_1_depth"
    col = pa.array([{"bytes": b"not a tiff", "path": None}] * table.num_rows, table.schema.field(key).type)
    pq.write_table(table.set_column(table.column_names.index(key), key, col), copy / DATA)
    with pytest.raises(EpisodeFormatError, match=f"column '{key}' row 0 is not an encoded image"):
        open_dataset(copy)[0].depth("varied_camera_1", 0)
