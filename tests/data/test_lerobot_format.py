"""LeRobot v3.0: layout facts, write -> read round trip, shared video windows, errors."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from policylens.data.droid import open_episode
from policylens.data.lerobot import EpisodeFormatError, open_dataset


def test_layout_follows_v3(lerobot_dir):
    info = json.loads((lerobot_dir / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2
    for rel in (
        "meta/tasks.parquet",
        "meta/stats.json",
        "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "videos/observation.images.hand_camera/chunk-000/file-000.mp4",
    ):
        assert (lerobot_dir / rel).is_file(), rel
    data = pq.read_table(lerobot_dir / "data/chunk-000/file-000.parquet")
    for col in ("observation.state", "action", "episode_index", "frame_index", "timestamp", "index", "task_index"):
        assert col in data.column_names
    assert data.num_rows == info["total_frames"]
    eps = pq.read_table(lerobot_dir / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    key = "videos/observation.images.varied_camera_1"
    assert eps[1][f"{key}/from_timestamp"] == pytest.approx(eps[0][f"{key}/to_timestamp"])
    tasks = pq.read_table(lerobot_dir / "meta/tasks.parquet").to_pydict()
    assert sorted(tasks["task_index"]) == list(range(info["total_tasks"]))
    stats = json.loads((lerobot_dir / "meta/stats.json").read_text())
    act = np.asarray(data.column("action").to_pylist())
    np.testing.assert_allclose(stats["action"]["mean"], act.mean(0), rtol=1e-4, atol=1e-5)
    assert np.asarray(stats["observation.images.hand_camera"]["mean"]).shape == (3, 1, 1)


def test_round_trip_matches_droid_copy(lerobot_dir, droid_dir):
    ds = open_dataset(lerobot_dir)
    assert len(ds) == 2
    for i, ep in enumerate(ds):
        ref = open_episode(droid_dir[i])  # same seed -> same episodes
        assert ep.instruction == ref.instruction and len(ep) == len(ref) and ep.success
        np.testing.assert_allclose(ep.actions, ref.actions, atol=1e-6)
        np.testing.assert_allclose(ep.state, ref.state, atol=1e-6)
        np.testing.assert_allclose(ep.proprio, ref.proprio, atol=1e-6)
        for cam in ref.camera_names:
            assert len(ep.frames(cam)) == len(ref)
            for t in (0, len(ep) - 1):  # the right frames come out of the shared video file
                err = np.abs(ep.frame(cam, t).astype(int) - ref.frame(cam, t).astype(int)).mean()
                assert err < 6, (i, cam, t, err)
                np.testing.assert_array_equal(ep.mask(cam, t), ref.mask(cam, t))
            np.testing.assert_allclose(ep.calibration[cam].intrinsics, ref.calibration[cam].intrinsics)
            np.testing.assert_allclose(
                ep.calibration[cam].extrinsics_at(1), ref.calibration[cam].extrinsics_at(1), atol=1e-5
            )


def test_errors_name_the_file(lerobot_dir, tmp_path):
    import shutil

    with pytest.raises(EpisodeFormatError, match=r"meta/info\.json"):
        open_dataset(tmp_path)
    copy = tmp_path / "ds"
    shutil.copytree(lerobot_dir, copy)
    info = json.loads((copy / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (copy / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(EpisodeFormatError, match="v2.1"):
        open_dataset(copy)
    info["codebase_version"] = "v3.0"
    (copy / "meta/info.json").write_text(json.dumps(info))
    (copy / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(EpisodeFormatError, match=r"file-000\.parquet"):
        open_dataset(copy)[0]


def test_image_features_in_parquet_are_read_as_cameras(lerobot_dir, tmp_path):
    """Datasets that embed frames as ``image`` features (no videos) read through the same interface."""
    import io
    import shutil

    import pyarrow as pa
    from PIL import Image

    copy = tmp_path / "img"
    shutil.copytree(lerobot_dir, copy)
    data_path = copy / "data/chunk-000/file-000.parquet"
    table = pq.read_table(data_path)
    frames = [np.full((8, 8, 3), i % 256, np.uint8) for i in range(table.num_rows)]

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    col = pa.array([png(f) for f in frames], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(table.append_column("observation.images.top", col), data_path)
    info = json.loads((copy / "meta/info.json").read_text())
    info["features"]["observation.images.top"] = {"dtype": "image", "shape": [8, 8, 3], "names": None}
    (copy / "meta/info.json").write_text(json.dumps(info))
    ep = open_dataset(copy)[1]
    start = ep.metadata["episode"]["dataset_from_index"]
    assert "top" in ep.camera_names and len(ep.frames("top")) == len(ep)
    np.testing.assert_array_equal(ep.frame("top", 2), frames[start + 2])
    with pytest.raises(KeyError, match="available"):
        ep.frame("side", 0)
