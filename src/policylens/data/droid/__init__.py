"""DROID raw episodes: write the re-exported layout, read it and the public DROID release."""

from .._episode import CameraCalibration, Episode, EpisodeFormatError
from ._reader import open_episode
from ._writer import FORMAT_VERSION, episode_dirname, write_droid_episode

__all__ = [
    "FORMAT_VERSION",
    "CameraCalibration",
    "Episode",
    "EpisodeFormatError",
    "episode_dirname",
    "open_episode",
    "write_droid_episode",
]
