"""Reader for LeRobot dataset format v3.0: ``open_dataset(path)[i] -> Episode``.

Reads ``meta/info.json`` (checks ``codebase_version``), ``meta/tasks.parquet``,
``meta/episodes/*/*.parquet``, the data parquet files and the per-camera MP4s; a video window
``[from_timestamp, to_timestamp)`` selects an episode's frames in a shared file.  A missing,
truncated or malformed file or field raises ``EpisodeFormatError`` naming the file and field.

Depth: features flagged ``is_depth_map`` (LeRobot's marker, see ``_depth``) stored as ``image`` cells (TIFF or
16-bit PNG, in their ``depth_unit``) are returned through ``Episode.depth(cam, t)`` in metres; the camera is
the key's last part without ``_depth``.  Depth stored as LeRobot's quantised 12-bit video is not read (such
features are neither RGB cameras nor depth here).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from .._files import read_json, read_parquet
from .._frames import VideoFrames
from .._geometry import pose_from_6d
from ._depth import UNITS, decode_depth, depth_camera, depth_unit, is_depth_feature

SUPPORTED = ("v3.0",)
INFO = "the LeRobot dataset description (codebase_version, fps, features, data_path, video_path)"


def _need(row: dict, key: str, where: Path, kind: str = "column") -> object:
    if key not in row:
        raise EpisodeFormatError(f"{where} has no {kind} '{key}'; expected it in a LeRobot v3.0 dataset")
    return row[key]


class _ImageColumn:
    """Frames stored in the parquet as ``image`` features ({bytes, path} structs of PNG/JPEG/TIFF).

    ``rgb``: (H, W, 3) uint8; else labels (H, W) uint8; with ``depth_unit`` (a key of ``UNITS``, or None to
    infer it): depth (H, W) float32 metres."""

    def __init__(self, column: list, rgb: bool, name: str, path: Path, depth_unit: str | bool = False) -> None:
        self.column, self.rgb, self.name, self.path, self.depth_unit = column, rgb, name, path, depth_unit

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, t: int) -> np.ndarray:
        cell = self.column[t]
        try:
            if self.depth_unit is not False:
                return decode_depth(cell["bytes"], self.depth_unit)
            with Image.open(io.BytesIO(cell["bytes"])) as im:
                return np.asarray(im.convert("RGB") if self.rgb else im).astype(np.uint8)
        except (OSError, TypeError, KeyError) as e:
            raise EpisodeFormatError(
                f"{self.path}: column '{self.name}' row {t} is not an encoded image ({e}); expected PNG/JPEG bytes"
            ) from e


class LeRobotDataset:
    """A LeRobot v3.0 dataset on disk; ``len(ds)`` episodes, ``ds[i]`` -> Episode."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise EpisodeFormatError(f"{info_path} is missing; a LeRobot dataset root holds meta/info.json")
        self.info = read_json(info_path, INFO)
        version = self.info.get("codebase_version")
        if version not in SUPPORTED:
            raise EpisodeFormatError(
                f"{info_path}: codebase_version={version!r} is not supported; this reader covers {SUPPORTED}"
            )
        for key in ("fps", "features", "data_path"):
            _need(self.info, key, info_path, "field")
        fps, feats = self.info["fps"], self.info["features"]
        if isinstance(fps, bool) or not isinstance(fps, int | float) or fps <= 0:
            raise EpisodeFormatError(f"{info_path}: field 'fps' is {fps!r}; expected frames per second (> 0)")
        if not isinstance(feats, dict) or not all(isinstance(v, dict) for v in feats.values()):
            raise EpisodeFormatError(f"{info_path}: field 'features' must map feature names to objects")
        self.fps = int(fps)
        depth = {k for k, v in feats.items() if is_depth_feature(v)}
        self.camera_keys = [k for k, v in feats.items() if v.get("dtype") == "video" and k not in depth]
        self.image_keys = [
            k
            for k, v in feats.items()
            if v.get("dtype") == "image" and k.startswith("observation.images.") and k not in depth
        ]
        self.depth_keys = [k for k in feats if k in depth and feats[k].get("dtype") == "image"]
        for key in self.depth_keys:
            if depth_unit(feats[key]) not in (None, *UNITS):
                raise EpisodeFormatError(
                    f"{info_path}: feature '{key}' has depth_unit={depth_unit(feats[key])!r}; expected one of "
                    f"{list(UNITS)} (or none, then the pixel type decides: integer = mm, float = m)"
                )
        for key in ("data_path", *(["video_path"] if self.camera_keys else [])):
            if not isinstance(self.info.get(key), str):
                raise EpisodeFormatError(
                    f"{info_path}: field '{key}' is {self.info.get(key)!r}; expected a path template string"
                )
        self.tasks = _read_tasks(self.root / "meta" / "tasks.parquet")
        ep_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise EpisodeFormatError(
                f"{self.root / 'meta/episodes'} holds no chunk-*/file-*.parquet; expected the episode index"
            )
        rows = []
        for f in ep_files:
            table = read_parquet(f, "the episode index (one row per episode)")
            _col(table, "episode_index", f)
            rows += [(r, f) for r in table.to_pylist()]
        rows.sort(key=lambda rf: rf[0]["episode_index"])
        self.episodes = [r for r, _ in rows]
        self._episode_files = [f for _, f in rows]  # where each row came from, for errors
        extra = self.root / "meta" / "policylens.json"
        self.extra = (
            read_json(extra, "per-episode extras {episodes: [...]}").get("episodes", []) if extra.is_file() else []
        )
        if not isinstance(self.extra, list):
            raise EpisodeFormatError(f"{extra}: field 'episodes' is a {type(self.extra).__name__}; expected a list")
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
            table = read_parquet(path, "the frames' data (observation.state, action, index, ...)")
            self._data[(chunk, file)] = {"path": path, "table": table}
        return self._data[(chunk, file)]

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} is out of range: the dataset holds {len(self)} episodes")
        row, ep_where = self.episodes[i], self._episode_files[i]
        data = self._data_file(_need(row, "data/chunk_index", ep_where), _need(row, "data/file_index", ep_where))
        table, path = data["table"], data["path"]
        lo, hi = _need(row, "dataset_from_index", ep_where), _need(row, "dataset_to_index", ep_where)
        index = np.asarray(table.column(_col(table, "index", path)).to_numpy())
        sel = np.flatnonzero((index >= lo) & (index < hi))
        if len(sel) != hi - lo or len(sel) == 0:
            raise EpisodeFormatError(
                f"{ep_where}: episode {row['episode_index']} has dataset_from_index={lo}, dataset_to_index={hi} "
                f"but column 'index' of {path} holds {len(sel)} of those rows; the index and the data disagree"
            )
        part = table.take(sel)
        actions = _matrix(part, "action", path)
        state = _matrix(part, "observation.state", path) if "observation.state" in part.column_names else None
        if "observation.proprio" in part.column_names:
            proprio = _matrix(part, "observation.proprio", path)
        elif state is not None:
            proprio = state
        else:
            raise EpisodeFormatError(f"{path} has no column 'observation.state'; expected the robot state")
        extra = self.extra[i] if i < len(self.extra) and isinstance(self.extra[i], dict) else {}
        cameras, masks, calibration = self._videos(row, ep_where, part, path, extra)
        for key in self.image_keys:
            cameras[key.split(".")[-1]] = _ImageColumn(part.column(_col(part, key, path)).to_pylist(), True, key, path)
        depths = {
            depth_camera(key): _ImageColumn(
                part.column(_col(part, key, path)).to_pylist(), False, key, path, depth_unit(self.info["features"][key])
            )
            for key in self.depth_keys
        }
        return Episode(
            path=self.root / f"episode_{i:06d}",
            instruction=self._instruction(row, part, path),
            actions=actions,
            proprio=proprio,
            state=state,
            cameras=cameras,
            calibration=calibration,
            masks=masks,
            depths=depths,
            success=extra.get("success"),
            metadata={"episode": row, **extra},
            layout="lerobot-v3.0",
        )

    def _videos(self, row: dict, ep_where: Path, part, path: Path, extra: dict) -> tuple[dict, dict, dict]:
        """Per camera: frames of the episode's video window, masks and calibration when stored."""
        cameras, masks, calibration = {}, {}, {}
        for key in self.camera_keys:
            cam = key.split(".")[-1]
            video = self.root / self.info["video_path"].format(
                video_key=key,
                chunk_index=_need(row, f"videos/{key}/chunk_index", ep_where),
                file_index=_need(row, f"videos/{key}/file_index", ep_where),
            )
            window = (
                _need(row, f"videos/{key}/from_timestamp", ep_where),
                _need(row, f"videos/{key}/to_timestamp", ep_where),
            )
            cameras[cam] = VideoFrames(video, window=window, length=len(part))
            mkey = f"observation.segmentation.{cam}"
            if mkey in part.column_names:
                masks[cam] = _ImageColumn(part.column(mkey).to_pylist(), False, mkey, path)
            ekey = f"observation.camera_extrinsics.{cam}"
            if ekey in part.column_names and cam in extra.get("intrinsics", {}):
                ext = np.stack([pose_from_6d(e) for e in _matrix(part, ekey, path, width=6)])
                if np.allclose(ext, ext[0], atol=1e-6):
                    ext = ext[0]
                K = _intrinsics(extra["intrinsics"][cam], cam, self.root / "meta/policylens.json")
                calibration[cam] = CameraCalibration(K, ext)
        return cameras, masks, calibration

    def _instruction(self, row: dict, part, path: Path) -> str:
        """The episode's first task string (``tasks`` in meta/episodes, else via ``task_index``)."""
        tasks = row.get("tasks")
        if tasks:
            return str(tasks[0])
        task_index = int(part.column(_col(part, "task_index", path))[0].as_py())
        if task_index not in self.tasks:
            raise EpisodeFormatError(
                f"{path}: task_index {task_index} of episode {row['episode_index']} is not in "
                f"{self.root / 'meta/tasks.parquet'} (it holds task_index {sorted(self.tasks)})"
            )
        return self.tasks[task_index]


PANDAS_INDEX = "__index_level_0__"


def _read_tasks(path: Path) -> dict[int, str]:
    """meta/tasks.parquet -> {task_index: task}; the file is required (lerobot reads tasks from it)."""
    if not path.is_file():
        raise EpisodeFormatError(
            f"{path} is missing; a LeRobot v3.0 dataset holds the task strings there (columns task_index, task)"
        )
    table = read_parquet(path, "the task strings (columns task_index, task)")
    index = table.column(_col(table, "task_index", path)).to_pylist()
    # lerobot writes a pandas frame indexed by the task string: pyarrow keeps an unnamed index as __index_level_0__
    column = "task" if "task" in table.column_names or PANDAS_INDEX not in table.column_names else PANDAS_INDEX
    names = table.column(_col(table, column, path)).to_pylist()
    return dict(zip(index, names, strict=True))


def _col(table, name: str, path: Path) -> str:
    if name not in table.column_names:
        raise EpisodeFormatError(f"{path} has no column '{name}'; columns there: {table.column_names}")
    return name


def _matrix(table, name: str, path: Path, width: int | None = None) -> np.ndarray:
    """A list / fixed-size-list column -> (N, D) float32; ragged or non-numeric values raise naming it."""
    values = table.column(_col(table, name, path)).to_pylist()
    try:
        arr = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    except (ValueError, TypeError) as e:
        raise EpisodeFormatError(
            f"{path}: column '{name}' is not a (N, D) number matrix ({e}); every row must hold D numbers"
        ) from e
    if width is not None and arr.shape[1] != width:
        raise EpisodeFormatError(f"{path}: column '{name}' has {arr.shape[1]} values per row; expected {width}")
    return arr


def _intrinsics(value, cam: str, path: Path) -> np.ndarray:
    try:
        K = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        K = np.zeros(0)
    if K.shape != (3, 3):
        raise EpisodeFormatError(f"{path}: field 'intrinsics.{cam}' is not a 3x3 number matrix")
    return K


def open_dataset(path: str | Path) -> LeRobotDataset:
    """Open the LeRobot v3.0 dataset rooted at ``path``."""
    return LeRobotDataset(Path(path))
