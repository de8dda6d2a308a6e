"""Episodes for policylens: DROID raw and LeRobot v3.0 readers/writers, point clouds, simulation.

Subpackages: ``droid`` (``open_episode``), ``lerobot`` (``open_dataset``), ``pointcloud``
(back-projection, PLY), ``sim`` (SimEnv, experts, ``generate_episodes``, ``evaluate_policy``),
``metaworld`` (the optional MetaWorld simulator: ``MetaWorldEnv``, ``evaluate_metaworld``).
"""

from ._episode import CameraCalibration, Episode, EpisodeFormatError, FrameSource
from ._frames import read_video
from ._open import open_episodes

__all__ = ["CameraCalibration", "Episode", "EpisodeFormatError", "FrameSource", "open_episodes", "read_video"]
