"""Dataset sources for anchor caches: ``synthetic:N``, ``droid:PATH``, ``lerobot:PATH``.

A source is an indexable of per-sample input dicts (no batch dim) for the policy.
Episode sources walk every step of every episode: sample i is (episode, t) in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..store import StoreError

__all__ = ["EpisodeSource", "SyntheticSource", "open_source"]


class SyntheticSource:
    """``synthetic:N``: sample ``i`` is ``model.example_batch(1, seed=i)`` without the batch dim."""

    def __init__(self, model: nn.Module, n: int) -> None:
        if not hasattr(model, "example_batch"):
            raise StoreError(
                f"dataset 'synthetic:{n}' needs a policy with example_batch(); got {type(model).__name__}."
            )
        self.model, self.n = model, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.model.example_batch(1, seed=int(i)).items()}


class EpisodeSource:
    """Every step of every episode as model inputs, through the policy's ``make_batch``.

    The policy's cameras are looked up in each episode by name (``hand_camera``) or by the
    LeRobot key ending (``observation.images.hand_camera``)."""

    def __init__(self, model: nn.Module, episodes: list, dataset: str) -> None:
        for name in ("make_batch", "config"):
            if not hasattr(model, name):
                raise StoreError(f"dataset {dataset!r} needs a policy with {name}; got {type(model).__name__}.")
        self.model, self.episodes = model, episodes
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]
        for e, ep in enumerate(episodes):
            for cam in model.config.cameras:
                self._camera(ep, cam, e)

    @staticmethod
    def _camera(ep, cam: str, e: int) -> str:
        for name in ep.camera_names:
            if name == cam or name.endswith(f".{cam}"):
                return name
        raise StoreError(
            f"episode {e} ({ep.path}) has no camera {cam!r} that the policy reads; it has {list(ep.camera_names)}"
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        e, t = self.index[int(i)]
        ep = self.episodes[e]
        images = {
            c: torch.as_tensor(np.asarray(ep.frame(self._camera(ep, c, e), t)))[None] for c in self.model.config.cameras
        }
        state = torch.as_tensor(np.asarray(ep.proprio[t], dtype=np.float32))[None]
        batch = self.model.make_batch(images, [ep.instruction], state)
        return {k: v[0] for k, v in batch.items()}


def _droid_episodes(root: Path) -> list:
    from ..data.droid import open_episode

    dirs = [root] if (root / "trajectory.h5").is_file() else sorted(p.parent for p in root.rglob("trajectory.h5"))
    if not dirs:
        raise StoreError(f"--dataset droid:{root}: no trajectory.h5 under {root}; pass a DROID episode or its root")
    return [open_episode(d) for d in dirs]


def open_source(model: nn.Module, dataset: str) -> SyntheticSource | EpisodeSource:
    """Parse a dataset spec: ``synthetic:N``, ``droid:PATH`` (an episode or a tree of them) or
    ``lerobot:PATH`` (a LeRobot v3.0 dataset root)."""
    kind, _, arg = dataset.partition(":")
    if kind == "synthetic" and arg.isdigit() and int(arg) >= 1:
        return SyntheticSource(model, int(arg))
    if kind == "droid" and arg:
        return EpisodeSource(model, _droid_episodes(Path(arg)), dataset)
    if kind == "lerobot" and arg:
        from ..data.lerobot import open_dataset

        data = open_dataset(arg)
        return EpisodeSource(model, [data[i] for i in range(len(data))], dataset)
    raise StoreError(
        f"--dataset={dataset!r}: expected synthetic:N (N >= 1), droid:PATH or lerobot:PATH (e.g. synthetic:256)."
    )
