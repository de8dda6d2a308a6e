"""Episode: the one in-memory view of a recorded episode, whatever format it was read from.

Frames, masks and depth are lazy ``FrameSource`` objects (decoded on first access); actions,
states and calibration are plain arrays.  Camera names follow DROID: ``varied_camera_1``,
``varied_camera_2``, ``hand_camera`` (public DROID serials are mapped onto these names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


class EpisodeFormatError(ValueError):
    """A file or field that a reader needs is missing or malformed; the message names it."""


class FrameSource(Protocol):
    """A lazily decoded sequence of frames: ``len(src)`` and ``src[t] -> np.ndarray``."""

    def __len__(self) -> int: ...

    def __getitem__(self, t: int) -> np.ndarray: ...


@dataclass
class CameraCalibration:
    """OpenCV intrinsics (3, 3) and camera-to-world extrinsics, (4, 4) fixed or (T, 4, 4) per step."""

    intrinsics: np.ndarray
    extrinsics: np.ndarray
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64)
        self.extrinsics = np.asarray(self.extrinsics, dtype=np.float64)
        if self.intrinsics.shape != (3, 3):
            raise EpisodeFormatError(f"intrinsics must be (3, 3), got {self.intrinsics.shape}")
        if self.extrinsics.shape[-2:] != (4, 4) or self.extrinsics.ndim not in (2, 3):
            raise EpisodeFormatError(f"extrinsics must be (4, 4) or (T, 4, 4), got {self.extrinsics.shape}")

    @property
    def moving(self) -> bool:
        return self.extrinsics.ndim == 3

    def extrinsics_at(self, t: int) -> np.ndarray:
        """Camera-to-world (4, 4) at step ``t``."""
        return self.extrinsics[t] if self.moving else self.extrinsics


@dataclass
class Episode:
    """One episode: T steps of actions (T, 7), proprio (T, 7), state (T, D) and per-camera frames."""

    path: Path
    instruction: str
    actions: np.ndarray
    proprio: np.ndarray
    cameras: dict[str, FrameSource]
    calibration: dict[str, CameraCalibration] = field(default_factory=dict)
    state: np.ndarray | None = None
    masks: dict[str, FrameSource] = field(default_factory=dict)
    depths: dict[str, FrameSource] = field(default_factory=dict)
    success: bool | None = None
    metadata: dict = field(default_factory=dict)
    layout: str = ""

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = self.proprio
        if len(self.actions) != len(self.proprio):
            raise EpisodeFormatError(
                f"{self.path}: actions have {len(self.actions)} steps but proprio has {len(self.proprio)}"
            )

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def camera_names(self) -> Sequence[str]:
        return list(self.cameras)

    @property
    def has_masks(self) -> bool:
        return bool(self.masks)

    def _check_camera(self, camera: str, table: dict) -> None:
        if camera not in table:
            raise KeyError(f"camera={camera!r} is not in episode {self.path}; available: {sorted(table)}")

    def find_camera(self, camera: str) -> str | None:
        """The episode's camera called ``camera``, else one whose name or ``camera`` is the other's
        LeRobot key (``observation.images.side`` <-> ``side``), else None."""
        names = list(self.camera_names)
        return next((n for n in names if n == camera or n.endswith(f".{camera}") or camera.endswith(f".{n}")), None)

    def frames(self, camera: str) -> FrameSource:
        """All RGB frames of ``camera`` (lazy): ``frames(cam)[t] -> (H, W, 3) uint8``."""
        self._check_camera(camera, self.cameras)
        return self.cameras[camera]

    def frame(self, camera: str, t: int) -> np.ndarray:
        """RGB frame (H, W, 3) uint8 of ``camera`` at step ``t``."""
        return self.frames(camera)[t]

    def mask(self, camera: str, t: int) -> np.ndarray | None:
        """Segmentation labels (H, W) uint8 at step ``t``, or None when the episode has none."""
        return self.masks[camera][t] if camera in self.masks else None

    def depth(self, camera: str, t: int) -> np.ndarray | None:
        """Depth (H, W) float32 metres (0 = invalid) at step ``t``, or None when absent."""
        return self.depths[camera][t] if camera in self.depths else None
