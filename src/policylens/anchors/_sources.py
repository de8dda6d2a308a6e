"""Dataset sources for anchor caches: ``synthetic:N``, ``droid:PATH``, ``lerobot:PATH`` or a bare
``PATH`` whose format (DROID or LeRobot) the data layer's ``open_episodes`` detects.

:func:`parse_dataset` checks a spec and opens its episodes before any policy loads (a typo or
a missing folder fails at once); the id it gives names the format, so ``runs/reach`` and
``droid:runs/reach`` make the same store. A source is an indexable of per-sample input dicts
(no batch dim) for the policy. Episode sources walk every step of every episode: sample i is
(episode, t) in order.
A dataset recorded with other camera names (a LeRobot dataset with ``side`` / ``wrist``) is read
through a camera map, dataset camera -> policy camera (``{"side": "varied_camera_1"}``, or the
CLI string ``side=varied_camera_1,wrist=hand_camera``); the state must have the policy's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..store import StoreError

__all__ = [
    "DATASET_FORMS",
    "DATASET_HELP",
    "DatasetSpec",
    "EpisodeSource",
    "SyntheticSource",
    "open_source",
    "parse_camera_map",
    "parse_dataset",
    "source_of",
]

DATASET_FORMS = "synthetic:N | droid:PATH | lerobot:PATH | PATH"
DATASET_HELP = (
    "synthetic:N (N samples of the policy's example inputs), droid:PATH (a DROID episode folder or a tree "
    "of them), lerobot:PATH (a LeRobot v3.0 dataset root), or PATH (either of the two, format detected)."
)
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


@dataclass
class DatasetSpec:
    """A checked dataset spec: ``kind`` ``synthetic`` (``n`` samples) or ``droid`` / ``lerobot`` (the
    ``episodes`` under ``path``, already opened). ``id``: what manifests record (format named)."""

    kind: str
    n: int = 0
    path: str = ""
    episodes: list = field(default_factory=list, repr=False)

    @property
    def id(self) -> str:
        return f"synthetic:{self.n}" if self.kind == "synthetic" else f"{self.kind}:{self.path}"


def parse_dataset(dataset: str) -> DatasetSpec:
    """Check ``dataset`` (``synthetic:N | droid:PATH | lerobot:PATH | PATH``) and open its episodes;
    no policy is needed, so a bad spec or path fails before one loads."""
    from ..data import EpisodeFormatError, open_episodes

    kind, sep, arg = str(dataset).partition(":")
    if sep and kind == "synthetic":
        if not (arg.isdigit() and int(arg) >= 1):
            raise StoreError(
                f"--dataset={dataset!r}: N of synthetic:N must be a whole number >= 1 (e.g. synthetic:256)."
            )
        return DatasetSpec("synthetic", n=int(arg))
    if not (sep and kind in ("droid", "lerobot")):
        kind, arg = "", str(dataset)  # a bare PATH (which may hold a ':')
    if not arg or not Path(arg).exists():
        what = f"{arg} does not exist" if arg else "the PATH is empty"
        raise StoreError(
            f"--dataset={dataset!r}: {what}; expected {DATASET_FORMS} (e.g. synthetic:256, droid:runs/reach)."
        )
    episodes = open_episodes(f"{kind}:{arg}" if kind else arg)
    if not episodes:
        raise EpisodeFormatError(f"--dataset={dataset!r}: {arg} holds no episodes")
    if not kind:  # the data layer detected the format; its readers name it in each episode's layout
        kind = "lerobot" if episodes[0].layout.startswith("lerobot") else "droid"
    return DatasetSpec(kind, path=arg, episodes=episodes)


def open_source(
    model: nn.Module, dataset: str | DatasetSpec, camera_map: Mapping[str, str] | str | None = None
) -> SyntheticSource | EpisodeSource:
    """The samples of ``dataset`` (a spec, see :func:`parse_dataset`, or one already parsed) as the
    policy's inputs. ``camera_map`` renames dataset cameras to the policy's (dataset camera ->
    policy camera; a dict or ``"side=varied_camera_1,wrist=hand_camera"``)."""
    if isinstance(camera_map, str):
        camera_map = parse_camera_map(camera_map)
    spec = dataset if isinstance(dataset, DatasetSpec) else parse_dataset(dataset)
    check_camera_map_applies(spec, camera_map)
    if spec.kind == "synthetic":
        return SyntheticSource(model, spec.n)
    return EpisodeSource(model, spec.episodes, spec.id, camera_map)


def source_of(model: nn.Module, manifest: Mapping) -> SyntheticSource | EpisodeSource:
    """The samples a store was built from, as ``model``'s inputs: the manifest's ``dataset_id``
    read through the camera map it recorded (``meta.extra["camera_map"]``)."""
    meta = manifest["meta"]
    return open_source(model, meta["dataset_id"], camera_map=(meta.get("extra") or {}).get("camera_map"))


def check_camera_map_applies(spec: DatasetSpec, camera_map: Mapping[str, str] | None) -> None:
    """A camera map renames a dataset's cameras: ``synthetic:N`` has none."""
    if spec.kind == "synthetic" and camera_map:
        raise StoreError(
            f"--dataset={spec.id!r} draws images from the policy's example_batch, so camera_map does not apply; "
            "drop it or use droid:PATH / lerobot:PATH / PATH."
        )
