"""LeRobot v3.0: layout facts, stats as lerobot 0.4.4 writes them, write -> read round trip, video windows, errors."""

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


Q = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = {"min", "max", "mean", "std", "count", *Q}


def _np_stats(x):
    """Reference per-episode stats; quantiles as lerobot's histogram estimates them (numpy inverted_cdf)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    ref = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": [len(x)]}
    return ref | {k: np.quantile(x, q, axis=0, method="inverted_cdf") for k, q in Q.items()}


def test_quantiles_match_numpy_and_aggregate_like_lerobot():
    from policylens.data.lerobot._stats import RunningStats, sample_frames

    frame_index = RunningStats().update(np.arange(12))  # known values: the k-th smallest, k = ceil(q * n)
    assert [frame_index[k] for k in Q] == [[0.0], [1.0], [5.0], [10.0], [11.0]]
    assert frame_index["min"] == [0] and frame_index["max"] == [11] and frame_index["count"] == [12]
    rng = np.random.default_rng(0)
    eps = [rng.standard_normal((n, 3)).astype(np.float32) * [1, 5, 0.1] + [0, 2, -1] for n in (37, 250)]
    rs = RunningStats()
    for x in eps:
        got = rs.update(x)
        for k, v in _np_stats(x).items():
            np.testing.assert_allclose(got[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
    total, allx = rs.to_json(), np.concatenate(eps).astype(np.float64)
    assert total["count"] == [287]
    np.testing.assert_allclose(total["mean"], allx.mean(0), rtol=1e-6)
    np.testing.assert_allclose(total["std"], allx.std(0), rtol=1e-6)
    np.testing.assert_array_equal(total["min"], allx.min(0))
    for k, q in Q.items():  # lerobot's aggregate_stats: count-weighted mean of the episodes' quantiles
        want = sum(len(x) * np.quantile(x, q, axis=0, method="inverted_cdf") for x in eps) / 287
        np.testing.assert_allclose(total[k], want, rtol=1e-6, err_msg=k)

    frames = rng.integers(0, 256, (150, 6, 5, 3), dtype=np.uint8)  # 150 frames -> lerobot samples 100
    idx = sample_frames(150)
    assert len(idx) == 100 and idx[0] == 0 and idx[-1] == 149
    img = RunningStats(image=True).update(frames)
    px = frames[idx].reshape(-1, 3) / 255.0
    assert img["count"] == [100]
    for k, v in _np_stats(px).items():
        if k != "count":
            assert np.asarray(img[k]).shape == (3, 1, 1), k
            np.testing.assert_allclose(np.asarray(img[k]).ravel(), v, rtol=1e-9, atol=1e-12, err_msg=k)
    mask = RunningStats(image=True).update(frames[..., 0])  # one channel -> three equal ones, as RGB
    np.testing.assert_allclose(np.asarray(mask["q50"]).ravel(), [np.asarray(img["q50"]).ravel()[0]] * 3)
    big = rng.integers(0, 256, (3, 320, 40, 3), dtype=np.uint8)  # >= 300 px -> strided by int(320 / 150)
    np.testing.assert_allclose(
        np.asarray(RunningStats(image=True).update(big)["mean"]).ravel(), big[:, ::2, ::2].mean((0, 1, 2)) / 255
    )


def test_episode_stats_columns_equal_numpy_per_episode(lerobot_dir, tmp_path):
    import io
    import shutil

    import pyarrow.compute as pc
    from PIL import Image

    info = json.loads((lerobot_dir / "meta/info.json").read_text())
    stats = json.loads((lerobot_dir / "meta/stats.json").read_text())
    data = pq.read_table(lerobot_dir / "data/chunk-000/file-000.parquet")
    eps = pq.read_table(lerobot_dir / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert set(stats) == set(info["features"])  # every feature, index/timestamp columns included, as lerobot
    for f in stats:
        assert set(stats[f]) == STAT_NAMES, f
        assert all(f"stats/{f}/{s}" in eps[0] for s in STAT_NAMES), f
    ep_index = np.asarray(data.column("episode_index").to_pylist())
    for ep in eps:
        rows = data.filter(pc.equal(data.column("episode_index"), ep["episode_index"]))
        assert rows.num_rows == ep["length"] == ep["stats/action/count"][0] == (ep_index == ep["episode_index"]).sum()
        for f in ("action", "observation.state", "timestamp", "frame_index", "index", "task_index"):
            for k, v in _np_stats(rows.column(f).to_pylist()).items():
                np.testing.assert_allclose(ep[f"stats/{f}/{k}"], v, rtol=1e-6, atol=1e-7, err_msg=f"{f}/{k}")
        masks = rows.column("observation.segmentation.hand_camera").to_pylist()
        labels = np.concatenate([np.asarray(Image.open(io.BytesIO(m["bytes"]))).ravel() for m in masks]) / 255
        got = ep["stats/observation.segmentation.hand_camera/q99"]
        assert np.asarray(got).shape == (3, 1, 1)
        np.testing.assert_allclose(np.ravel(got), [np.quantile(labels, 0.99, method="inverted_cdf")] * 3)
        video = {s: np.asarray(ep[f"stats/observation.images.hand_camera/{s}"]) for s in STAT_NAMES - {"count"}}
        assert all(v.shape == (3, 1, 1) and v.min() >= 0 and v.max() <= 1 for v in video.values())
        assert (video["min"] <= video["q01"]).all() and (video["q01"] <= video["q50"]).all()
        assert (video["q50"] <= video["q99"]).all() and (video["q99"] <= video["max"]).all()
    act = np.asarray(data.column("action").to_pylist(), dtype=np.float64)
    np.testing.assert_allclose(stats["action"]["std"], act.std(0), rtol=1e-5, atol=1e-7)
    n = sum(ep["length"] for ep in eps)
    for k in Q:  # stats.json = lerobot's aggregate of the per-episode columns
        want = sum(np.asarray(ep[f"stats/action/{k}"]) * ep["length"] for ep in eps) / n
        np.testing.assert_allclose(stats["action"][k], want, rtol=1e-9)
    old = tmp_path / "old"  # a dataset written before the stats columns existed still reads
    shutil.copytree(lerobot_dir, old)
    ep_path = old / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(ep_path)
    pq.write_table(table.drop_columns([c for c in table.column_names if c.startswith("stats/")]), ep_path)
    np.testing.assert_array_equal(open_dataset(old)[1].actions, open_dataset(lerobot_dir)[1].actions)
