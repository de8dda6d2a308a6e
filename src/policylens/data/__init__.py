"""Episode formats for policylens: DROID raw and LeRobot v3.0 readers/writers, point clouds.

Subpackages: ``droid`` (``open_episode``), ``lerobot`` (``open_dataset``), ``pointcloud``
(back-projection, PLY); the episode feed (``EpisodeFeed``: episodes -> a policy's inputs through a
camera map, ``training_samples``, ``robot_state``). ``data`` holds formats only: the simulators
that write them live one floor up in ``policylens.sim``, and nothing here imports a model or a job.
"""

from ._episode import CameraCalibration, Episode, EpisodeFormatError, FrameSource
from ._feed import (
    MAP_FORM,
    EpisodeFeed,
    FeedError,
    check_camera_map,
    check_state_size,
    dataset_training_episodes,
    episode_cameras,
    parse_camera_map,
    robot_state,
    training_samples,
)
from ._frames import read_video
from ._geometry import matrix_to_quat, pose_from_6d, pose_to_6d
from ._open import open_episodes
from ._output import IF_EXISTS, prepare_output

__all__ = [
    "IF_EXISTS",
    "MAP_FORM",
    "CameraCalibration",
    "Episode",
    "EpisodeFeed",
    "EpisodeFormatError",
    "FeedError",
    "FrameSource",
    "check_camera_map",
    "check_state_size",
    "dataset_training_episodes",
    "episode_cameras",
    "matrix_to_quat",
    "open_episodes",
    "parse_camera_map",
    "pose_from_6d",
    "pose_to_6d",
    "prepare_output",
    "read_video",
    "robot_state",
    "training_samples",
]
