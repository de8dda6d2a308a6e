"""Streaming writer for LeRobot dataset format v3.0 (pyarrow + PyAV, no ``lerobot`` dependency).

Layout written (one chunk, one file per kind; LeRobot rolls files over at a size limit, which a
simulated dataset never reaches):
```
meta/info.json  meta/stats.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
data/chunk-000/file-000.parquet
videos/observation.images.<camera>/chunk-000/file-000.mp4   (all episodes, back to back)
meta/policylens.json   (extra: per-episode success, scene, camera intrinsics; ignored by LeRobot)
```
Statistics (see ``_stats``) as lerobot 0.4.4 writes them: per episode, one ``stats/<feature>/<stat>`` column
in ``meta/episodes`` for every feature (vectors, index/timestamp columns, videos, segmentation masks) and stat
(min, max, mean, std, count, q01, q10, q50, q90, q99); ``meta/stats.json`` aggregates them like lerobot's
``aggregate_stats``, so lerobot's ``delete_episodes`` / ``split_dataset`` recompute it consistently.

Per camera the data parquet also holds, when the recording has them, segmentation labels
(``observation.segmentation.<camera>``, PNG ``image`` cells) and depth (``observation.images.<camera>_depth``,
uint16-millimetre TIFF ``image`` cells flagged ``is_depth_map`` as LeRobot flags depth; see ``_depth``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from .._geometry import pose_to_6d
from ._depth import depth_feature, depth_key, encode_depth, to_millimetres
from ._stats import RunningStats

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def _vec(name: str, n: int) -> dict:
    return {"dtype": "float32", "shape": [n], "names": [f"{name}_{i}" for i in range(n)]}


class LeRobotWriter:
    """``add_episode(rec)`` for each recording, then ``finalize()``; see ``record_episode`` for rec.

    ``masks`` / ``depth``: keep the recording's segmentation labels / depth maps. Depth is off by
    default: LeRobot 0.4.x, the released version, reads a depth image feature as an RGB camera and
    its ``delete_episodes`` / stats tools fail on it; LeRobot's main branch reads it as depth.
    """

    def __init__(
        self, root: Path, fps: int, robot_type: str = "panda_sim", masks: bool = True, depth: bool = False
    ) -> None:
        self.root, self.fps, self.robot_type, self.masks = Path(root), int(fps), robot_type, masks
        self.depth = depth
        self.root.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, list] = {}
        self.episodes: list[dict] = []
        self.tasks: dict[str, int] = {}
        self.extra: list[dict] = []
        self.features: dict[str, dict] = {}
        self.stats: dict[str, RunningStats] = {}
        self.videos: dict[str, tuple] = {}
        self.frames_written: dict[str, int] = {}
        self.total = 0

    def _video(self, key: str, h: int, w: int):
        if key not in self.videos:
            path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(path), mode="w")
            stream = container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast", "g": "2"}
            self.videos[key] = (container, stream)
            self.frames_written[key] = 0
        return self.videos[key]

    def add_episode(self, rec: dict) -> None:
        T, ep = len(rec["actions"]), len(self.episodes)
        task_index = self.tasks.setdefault(rec["instruction"], len(self.tasks))
        ep_stats: dict[str, dict] = {}
        cols = {
            "observation.state": rec["state"],
            "observation.proprio": rec["proprio"],
            "action": rec["actions"],
        }
        for cam, ext in rec["extrinsics"].items():
            cols[f"observation.camera_extrinsics.{cam}"] = np.stack([pose_to_6d(e) for e in ext]).astype(np.float32)
        for key, arr in cols.items():
            self.features.setdefault(key, _vec(key.split(".")[-1], arr.shape[1]))
            self.rows.setdefault(key, []).extend(arr.astype(np.float32))
            ep_stats[key] = self.stats.setdefault(key, RunningStats()).update(arr)
        ints = {
            "timestamp": np.arange(T, dtype=np.float32) / self.fps,
            "frame_index": np.arange(T),
            "episode_index": np.full(T, ep),
            "index": np.arange(self.total, self.total + T),
            "task_index": np.full(T, task_index),
        }
        for key, arr in ints.items():
            self.rows.setdefault(key, []).extend(arr.tolist())
            ep_stats[key] = self.stats.setdefault(key, RunningStats()).update(arr)
        meta = {
            "episode_index": ep,
            "tasks": [rec["instruction"]],
            "length": T,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": self.total,
            "dataset_to_index": self.total + T,
        }
        for cam, frames in rec.get("images", {}).items():
            key = f"observation.images.{cam}"
            container, stream = self._video(key, frames.shape[1], frames.shape[2])
            start = self.frames_written[key]
            for img in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                vf.pts = self.frames_written[key]
                for packet in stream.encode(vf):
                    container.mux(packet)
                self.frames_written[key] += 1
            meta.update(
                {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start / self.fps,
                    f"videos/{key}/to_timestamp": (start + T) / self.fps,
                }
            )
            self.features[key] = {
                "dtype": "video",
                "shape": [frames.shape[1], frames.shape[2], 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": frames.shape[1],
                    "video.width": frames.shape[2],
                    "video.codec": "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
            ep_stats[key] = self.stats.setdefault(key, RunningStats(image=True)).update(frames)
            if self.masks and "segmentation" in rec:
                mkey = f"observation.segmentation.{cam}"
                self.features[mkey] = {
                    "dtype": "image",
                    "shape": [frames.shape[1], frames.shape[2], 1],
                    "names": ["height", "width", "channels"],
                }
                masks = np.asarray(rec["segmentation"][cam], dtype=np.uint8)
                self.rows.setdefault(mkey, []).extend(_png(m) for m in masks)
                ep_stats[mkey] = self.stats.setdefault(mkey, RunningStats(image=True)).update(masks)
            if self.depth and "depth" in rec:
                dkey = depth_key(cam)
                self.features[dkey] = depth_feature(frames.shape[1], frames.shape[2])
                mm = to_millimetres(rec["depth"][cam])  # (T, H, W) uint16
                self.rows.setdefault(dkey, []).extend(encode_depth(d) for d in mm)
                ep_stats[dkey] = self.stats.setdefault(dkey, RunningStats(depth=True)).update(mm)
        meta.update({f"stats/{k}/{s}": v for k, st in ep_stats.items() for s, v in st.items()})
        meta["meta/episodes/chunk_index"], meta["meta/episodes/file_index"] = 0, 0
        self.episodes.append(meta)
        self.extra.append(
            {
                "episode_index": ep,
                "success": bool(rec["success"]),
                "seed": rec.get("seed"),
                "scene": rec.get("scene"),
                "intrinsics": {c: np.asarray(k).tolist() for c, k in rec["intrinsics"].items()},
            }
        )
        self.total += T

    def finalize(self) -> Path:
        """Close the videos and write the parquet files and the JSON metadata."""
        for container, stream in self.videos.values():
            for packet in stream.encode():
                container.mux(packet)
            container.close()
        data_path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(_arrow_columns(self.rows)), data_path)
        ep_path = self.root / "meta/episodes/chunk-000/file-000.parquet"
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), ep_path)
        _write_tasks(self.root / "meta/tasks.parquet", self.tasks)
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            dtype = "float32" if key == "timestamp" else "int64"
            self.features[key] = {"dtype": dtype, "shape": [1], "names": None}
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self.episodes),
            "total_frames": self.total,
            "total_tasks": len(self.tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.videos else None,
            "features": self.features,
        }
        (self.root / "meta/info.json").write_text(json.dumps(info, indent=4))
        stats = {k: s.to_json() for k, s in self.stats.items()}
        (self.root / "meta/stats.json").write_text(json.dumps(stats, indent=4))
        (self.root / "meta/policylens.json").write_text(json.dumps({"episodes": self.extra}, indent=1))
        return self.root


def _png(mask: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _arrow_columns(rows: dict[str, list]) -> dict[str, pa.Array]:
    out = {}
    for key, values in rows.items():
        first = values[0]
        if isinstance(first, np.ndarray):
            flat = pa.array(np.stack(values).reshape(-1), type=pa.float32())
            out[key] = pa.FixedSizeListArray.from_arrays(flat, first.shape[0])
        elif isinstance(first, dict):
            out[key] = pa.array(values, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        elif isinstance(first, float):
            out[key] = pa.array(values, type=pa.float32())
        else:
            out[key] = pa.array(values, type=pa.int64())
    return out


def _write_tasks(path: Path, tasks: dict[str, int]) -> None:
    """tasks.parquet as pandas writes it: column ``task_index``, index ``task`` (the task string)."""
    names = list(tasks)
    table = pa.table({"task_index": pa.array([tasks[n] for n in names], pa.int64()), "task": names})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "pandas_version": "2.2.0",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)
