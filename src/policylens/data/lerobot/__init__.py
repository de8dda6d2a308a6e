"""LeRobot dataset format v3.0: a streaming writer and a reader giving ``Episode`` objects."""

from .._episode import Episode, EpisodeFormatError
from ._reader import SUPPORTED, LeRobotDataset, open_dataset
from ._writer import CODEBASE_VERSION, LeRobotWriter

__all__ = [
    "CODEBASE_VERSION",
    "SUPPORTED",
    "Episode",
    "EpisodeFormatError",
    "LeRobotDataset",
    "LeRobotWriter",
    "open_dataset",
]
