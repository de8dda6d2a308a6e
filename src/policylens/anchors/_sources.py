"""Dataset sources for anchor caches: ``synthetic:N``, ``droid:PATH``, ``lerobot:PATH``.

A source is an indexable of per-sample input dicts (no batch dim) for the policy.
Episode sources walk every step of every episode: sample i is (episode, t) in order.
A dataset recorded with other camera names (a LeRobot dataset with ``side`` / ``wrist``) is read
through a camera map, dataset camera -> policy camera (``{"side": "varied_camera_1"}``, or the
CLI string ``side=varied_camera_1,wrist=hand_camera``); the state must have the policy's size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..store import StoreError

__all__ = ["EpisodeSource", "SyntheticSource", "open_source", "parse_camera_map"]

MAP_FORM = "DATASET_CAMERA=POLICY_CAMERA[,...] (e.g. side=varied_camera_1,wrist=hand_camera)"


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


def parse_camera_map(text: str) -> dict[str, str]:
    """``"side=varied_camera_1,wrist=hand_camera"`` -> ``{"side": "varied_camera_1", "wrist": "hand_camera"}``
    (dataset camera -> policy camera)."""
    out: dict[str, str] = {}
    for item in filter(str.strip, text.split(",")):
        src, sep, dst = (part.strip() for part in item.partition("="))
        if not sep or not src or not dst:
            raise StoreError(f"camera_map={text!r}: entry {item.strip()!r} is not {MAP_FORM}.")
        if src in out:
            raise StoreError(f"camera_map={text!r}: dataset camera {src!r} is mapped twice; map it once.")
        out[src] = dst
    if not out:
        raise StoreError(f"camera_map={text!r} names no camera; expected {MAP_FORM}.")
    return out


class EpisodeSource:
    """Every step of every episode as model inputs, through the policy's ``make_batch``.

    The policy's cameras are looked up in each episode by name (``hand_camera``) or by the
    LeRobot key ending (``observation.images.hand_camera``), after ``camera_map`` (dataset
    camera -> policy camera) renames the dataset's cameras. Each episode's state
    (``ep.proprio``, (T, D)) must have the policy's ``config.state_dim`` values."""

    def __init__(
        self, model: nn.Module, episodes: list, dataset: str, camera_map: Mapping[str, str] | None = None
    ) -> None:
        for name in ("make_batch", "config"):
            if not hasattr(model, name):
                raise StoreError(f"dataset {dataset!r} needs a policy with {name}; got {type(model).__name__}.")
        self.model, self.episodes = model, episodes
        self.camera_map = dict(camera_map or {})
        _check_map(self.camera_map, list(model.config.cameras))
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep))]
        self.cameras = [self._cameras(ep, e) for e, ep in enumerate(episodes)]  # per episode: policy cam -> name
        want = getattr(model.config, "state_dim", None)
        for e, ep in enumerate(episodes):
            got = np.shape(ep.proprio)[-1]
            if want is not None and got != want:
                raise StoreError(
                    f"episode {e} ({ep.path}) has a {got}-D state but the policy reads a {want}-D state "
                    f"(config.state_dim={want}). Use a policy trained on {got}-D states, or give the dataset the "
                    f"policy's {want}-D state (LeRobot: an 'observation.proprio' column of {want} values, which the "
                    "reader prefers to 'observation.state')."
                )

    def _cameras(self, ep, e: int) -> dict[str, str]:
        """{policy camera: the episode's camera name} for one episode."""
        names = list(ep.camera_names)
        out = {}
        for src, dst in self.camera_map.items():
            found = ep.find_camera(src)
            if found is None:
                raise StoreError(
                    f"camera_map names dataset camera {src!r}, but episode {e} ({ep.path}) has cameras {names}; "
                    f"map those: {MAP_FORM}."
                )
            out[dst] = found
        for cam in self.model.config.cameras:
            if cam not in out:
                found = ep.find_camera(cam)
                if found is None:
                    raise StoreError(
                        f"episode {e} ({ep.path}) has no camera {cam!r} that the policy reads; it has {names}. "
                        f"Map a dataset camera onto it: camera_map={{'<dataset camera>': {cam!r}}} "
                        f"(CLI: --camera-map {names[0] if names else 'CAMERA'}={cam})."
                    )
                out[cam] = found
        return out

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        e, t = self.index[int(i)]
        ep, cams = self.episodes[e], self.cameras[e]
        images = {c: torch.from_numpy(np.array(ep.frame(cams[c], t)))[None] for c in self.model.config.cameras}
        state = torch.as_tensor(np.asarray(ep.proprio[t], dtype=np.float32))[None]
        batch = self.model.make_batch(images, [ep.instruction], state)
        return {k: v[0] for k, v in batch.items()}


def _check_map(camera_map: dict[str, str], policy_cameras: list[str]) -> None:
    unknown = sorted({dst for dst in camera_map.values() if dst not in policy_cameras})
    if unknown:
        raise StoreError(
            f"camera_map maps onto {unknown}, which the policy does not read; its cameras are {policy_cameras}."
        )
    targets = list(camera_map.values())
    twice = sorted({dst for dst in targets if targets.count(dst) > 1})
    if twice:
        raise StoreError(f"camera_map maps several dataset cameras onto {twice}; map one dataset camera to each.")


def open_source(
    model: nn.Module, dataset: str, camera_map: Mapping[str, str] | str | None = None
) -> SyntheticSource | EpisodeSource:
    """Parse a dataset spec: ``synthetic:N``, ``droid:PATH`` (an episode or a tree of them) or
    ``lerobot:PATH`` (a LeRobot v3.0 dataset root). ``camera_map`` renames dataset cameras to the
    policy's (dataset camera -> policy camera; a dict or ``"side=varied_camera_1,wrist=hand_camera"``)."""
    if isinstance(camera_map, str):
        camera_map = parse_camera_map(camera_map)
    kind, _, arg = dataset.partition(":")
    if kind == "synthetic" and arg.isdigit() and int(arg) >= 1:
        if camera_map:
            raise StoreError(
                f"--dataset={dataset!r} draws images from the policy's example_batch, so camera_map does not apply; "
                "drop it or use droid:PATH / lerobot:PATH."
            )
        return SyntheticSource(model, int(arg))
    if kind in ("droid", "lerobot") and arg:
        from ..data import open_episodes

        return EpisodeSource(model, open_episodes(dataset), dataset, camera_map)
    raise StoreError(
        f"--dataset={dataset!r}: expected synthetic:N (N >= 1), droid:PATH or lerobot:PATH (e.g. synthetic:256)."
    )
