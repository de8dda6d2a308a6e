"""Reader for LeRobot dataset format v3.0: ``open_dataset(path)[i] -> Episode``.

Reads ``meta/info.json`` (checks ``codebase_version``), ``meta/tasks.parquet``,
``meta/episodes/*/*.parquet``, the data parquet files and the per-camera MP4s; a video window
``[from_timestamp, to_timestamp)`` selects an episode's frames in a shared file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from .._frames import VideoFrames
from .._geometry import pose_from_6d

SUPPORTED = ("v3.0",)


def _need(row: dict, key: str, where: Path) -> object:
    if key not in row:
        raise EpisodeFormatError(f"{where} has no column '{key}'; expected it in a LeRobot v3.0 dataset")
    return row[key]


class _ImageColumn:
    """Frames stored in the parquet as ``image`` features ({bytes, path} structs of PNG/JPEG)."""

    def __init__(self, column: list, rgb: bool) -> None:
        self.column, self.rgb = column, rgb

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, t: int) -> np.ndarray:
        with Image.open(io.BytesIO(self.column[t]["bytes"])) as im:
            return np.asarray(im.convert("RGB") if self.rgb else im).astype(np.uint8)


class LeRobotDataset:
    """A LeRobot v3.0 dataset on disk; ``len(ds)`` episodes, ``ds[i]`` -> Episode."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise EpisodeFormatError(f"{info_path} is missing; a LeRobot dataset root holds meta/info.json")
        self.info = json.loads(info_path.read_text())
        version = self.info.get("codebase_version")
        if version not in SUPPORTED:
            raise EpisodeFormatError(
                f"{info_path}: codebase_version={version!r} is not supported; this reader covers {SUPPORTED}"
            )
        for key in ("fps", "features", "data_path"):
            _need(self.info, key, info_path)
        self.fps = int(self.info["fps"])
        ep_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise EpisodeFormatError(
                f"{self.root / 'meta/episodes'} holds no chunk-*/file-*.parquet; expected the episode index"
            )
        self.episodes = [r for f in ep_files for r in pq.read_table(f).to_pylist()]
        self.episodes.sort(key=lambda r: r["episode_index"])
        feats = self.info["features"]
        self.camera_keys = [k for k, v in feats.items() if v.get("dtype") == "video"]
        self.image_keys = [
            k for k, v in feats.items() if v.get("dtype") == "image" and k.startswith("observation.images.")
        ]
        extra = self.root / "meta" / "policylens.json"
        self.extra = json.loads(extra.read_text())["episodes"] if extra.is_file() else []
        self._data: dict[tuple[int, int], dict] = {}

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def _data_file(self, chunk: int, file: int) -> dict:
        if (chunk, file) not in self._data:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise EpisodeFormatError(f"data file {path} is missing; meta/episodes points to it")
            self._data[(chunk, file)] = {"path": path, "table": pq.read_table(path)}
        return self._data[(chunk, file)]

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} is out of range: the dataset holds {len(self)} episodes")
        row = self.episodes[i]
        ep_where = self.root / "meta/episodes"
        data = self._data_file(_need(row, "data/chunk_index", ep_where), _need(row, "data/file_index", ep_where))
        table, path = data["table"], data["path"]
        lo, hi = _need(row, "dataset_from_index", ep_where), _need(row, "dataset_to_index", ep_where)
        index = np.asarray(table.column(_col(table, "index", path)).to_numpy())
        sel = np.flatnonzero((index >= lo) & (index < hi))
        part = table.take(sel)
        actions = _matrix(part, "action", path)
        state = _matrix(part, "observation.state", path) if "observation.state" in part.column_names else None
        if "observation.proprio" in part.column_names:
            proprio = _matrix(part, "observation.proprio", path)
        elif state is not None:
            proprio = state
        else:
            raise EpisodeFormatError(f"{path} has no column 'observation.state'; expected the robot state")
        cameras, masks, calibration = {}, {}, {}
        extra = self.extra[i] if i < len(self.extra) else {}
        for key in self.camera_keys:
            cam = key.split(".")[-1]
            video = self.root / self.info["video_path"].format(
                video_key=key,
                chunk_index=_need(row, f"videos/{key}/chunk_index", ep_where),
                file_index=_need(row, f"videos/{key}/file_index", ep_where),
            )
            window = (row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"])
            cameras[cam] = VideoFrames(video, window=window, length=len(part))
            mkey = f"observation.segmentation.{cam}"
            if mkey in part.column_names:
                masks[cam] = _ImageColumn(part.column(mkey).to_pylist(), rgb=False)
            ekey = f"observation.camera_extrinsics.{cam}"
            if ekey in part.column_names and cam in extra.get("intrinsics", {}):
                ext = np.stack([pose_from_6d(e) for e in _matrix(part, ekey, path)])
                if np.allclose(ext, ext[0], atol=1e-6):
                    ext = ext[0]
                calibration[cam] = CameraCalibration(np.asarray(extra["intrinsics"][cam]), ext)
        for key in self.image_keys:
            cameras[key.split(".")[-1]] = _ImageColumn(part.column(_col(part, key, path)).to_pylist(), rgb=True)
        tasks = row.get("tasks") or [""]
        return Episode(
            path=self.root / f"episode_{i:06d}",
            instruction=tasks[0],
            actions=actions,
            proprio=proprio,
            state=state,
            cameras=cameras,
            calibration=calibration,
            masks=masks,
            success=extra.get("success"),
            metadata={"episode": row, **extra},
            layout="lerobot-v3.0",
        )


def _col(table, name: str, path: Path) -> str:
    if name not in table.column_names:
        raise EpisodeFormatError(f"{path} has no column '{name}'; columns there: {table.column_names}")
    return name


def _matrix(table, name: str, path: Path) -> np.ndarray:
    """A list / fixed-size-list column -> (N, D) float32."""
    values = table.column(_col(table, name, path)).to_pylist()
    return np.asarray(values, dtype=np.float32).reshape(len(values), -1)


def open_dataset(path: str | Path) -> LeRobotDataset:
    """Open the LeRobot v3.0 dataset rooted at ``path``."""
    return LeRobotDataset(Path(path))
