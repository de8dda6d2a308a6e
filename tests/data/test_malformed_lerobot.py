"""Malformed LeRobot v3.0 datasets: each case copies a dataset written by ``LeRobotWriter`` (the session
fixture), damages one file, and checks that reading raises ``EpisodeFormatError`` naming that file and
the field."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policylens.data import EpisodeFormatError
from policylens.data.lerobot import open_dataset

INFO, TASKS, EPISODES = "meta/info.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet"
DATA, EXTRA = "data/chunk-000/file-000.parquet", "meta/policylens.json"
VIDEO = "videos/observation.images.varied_camera_1/chunk-000/file-000.mp4"


def _read_all(root):
    """Open the dataset, read episode 0 and decode its step 0 of every camera and mask."""
    ep = open_dataset(root)[0]
    for cam in ep.camera_names:
        ep.frame(cam, 0)
        ep.mask(cam, 0)
    return ep


def _truncate(rel, keep=0.5):
    def damage(root):
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: int(len(data) * keep)])

    return damage


def _info(edit):
    def damage(root):
        info = json.loads((root / INFO).read_text())
        edit(info)
        (root / INFO).write_text(json.dumps(info))

    return damage


def _table(rel, edit):
    def damage(root):
        pq.write_table(edit(pq.read_table(root / rel)), root / rel)

    return damage


def _set_column(name, values):
    def edit(table):
        i = table.column_names.index(name)
        return table.set_column(i, name, pa.array(values(table)))

    return edit


CASES = {  # name: (damage, damaged file, text the message must hold)
    "truncated info.json": (_truncate(INFO), INFO, "is not valid JSON (line"),
    "info.json list": (lambda r: (r / INFO).write_text("[1, 2]"), INFO, "holds a JSON list"),
    "info.json fps text": (_info(lambda i: i.update(fps="fast")), INFO, "field 'fps' is 'fast'"),
    "info.json without features": (_info(lambda i: i.pop("features")), INFO, "no field 'features'"),
    "info.json video_path null": (_info(lambda i: i.update(video_path=None)), INFO, "field 'video_path' is None"),
    "info.json v2.1": (_info(lambda i: i.update(codebase_version="v2.1")), INFO, "codebase_version='v2.1'"),
    "no tasks.parquet": (lambda r: (r / TASKS).unlink(), TASKS, "is missing; a LeRobot v3.0 dataset holds the task"),
    "truncated tasks.parquet": (_truncate(TASKS), TASKS, "is not a readable parquet file"),
    "tasks.parquet without task": (_table(TASKS, lambda t: t.drop_columns(["task"])), TASKS, "no column 'task'"),
    "truncated episode index": (_truncate(EPISODES), EPISODES, "is not a readable parquet file"),
    "episode index without video window": (
        _table(EPISODES, lambda t: t.drop_columns(["videos/observation.images.hand_camera/from_timestamp"])),
        EPISODES,
        "no column 'videos/observation.images.hand_camera/from_timestamp'",
    ),
    "episode index beyond the data": (
        _table(EPISODES, _set_column("dataset_to_index", lambda t: [10_000] * t.num_rows)),
        EPISODES,
        "dataset_to_index=10000 but column 'index'",
    ),
    "truncated data file": (_truncate(DATA, 0.9), DATA, "is not a readable parquet file"),
    "data without action": (_table(DATA, lambda t: t.drop_columns(["action"])), DATA, "no column 'action'"),
    "data with ragged state": (
        _table(DATA, _set_column("observation.state", lambda t: [[1.0] * (1 + i % 2) for i in range(t.num_rows)])),
        DATA,
        "column 'observation.state' is not a (N, D) number matrix",
    ),
    "data with broken mask": (
        _table(
            DATA,
            _set_column(
                "observation.segmentation.hand_camera",
                lambda t: pa.array(
                    [{"bytes": b"not a png", "path": None}] * t.num_rows,
                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                ),
            ),
        ),
        DATA,
        "column 'observation.segmentation.hand_camera' row 0 is not an encoded image",
    ),
    "truncated video": (_truncate(VIDEO, 0.3), VIDEO, "cannot be decoded"),
    "truncated policylens.json": (_truncate(EXTRA, 0.5), EXTRA, "is not valid JSON"),
    "policylens.json intrinsics 2x2": (
        lambda r: (r / EXTRA).write_text(json.dumps({"episodes": [{"intrinsics": {"hand_camera": [[1, 0], [0, 1]]}}]})),
        EXTRA,
        "field 'intrinsics.hand_camera' is not a 3x3 number matrix",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_lerobot_names_file_and_field(lerobot_dir, tmp_path, name):
    damage, rel, field = CASES[name]
    root = tmp_path / "ds"
    shutil.copytree(lerobot_dir, root)
    damage(root)
    with pytest.raises(EpisodeFormatError) as err:
        _read_all(root)
    msg = str(err.value)
    assert str(root / rel) in msg and field in msg, msg


def test_instruction_falls_back_to_tasks_parquet(lerobot_dir, tmp_path):
    """Without a ``tasks`` column in meta/episodes, the task string comes from tasks.parquet by task_index."""
    root = tmp_path / "ds"
    shutil.copytree(lerobot_dir, root)
    want = [ep.instruction for ep in open_dataset(root)]
    _table(EPISODES, lambda t: t.drop_columns(["tasks"]))(root)
    assert [ep.instruction for ep in open_dataset(root)] == want
    _table(TASKS, _set_column("task_index", lambda t: [i + 5 for i in range(t.num_rows)]))(root)
    with pytest.raises(EpisodeFormatError, match=r"task_index 0 of episode 0 is not in .*tasks\.parquet"):
        open_dataset(root)[0]
