"""Dataset sources for anchor caches: ``synthetic:N``, ``droid:PATH``, ``lerobot:PATH`` or a bare
``PATH`` whose format (DROID or LeRobot) the data layer's ``open_episodes`` detects.

:func:`parse_dataset` checks a spec and opens its episodes before any policy loads (a typo or
a missing folder fails at once); the id it gives names the format, so ``runs/reach`` and
``droid:runs/reach`` make the same store. A source is an indexable of per-sample input dicts
(no batch dim) for the policy. Episode sources walk every step of every episode: sample i is
(episode, t) in order.
A dataset recorded with other camera names (a LeRobot dataset with ``side`` / ``wrist``) is read
through a camera map (``policylens.data.EpisodeFeed``, the episode feed every job shares); the
state must have the policy's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from ..data import EpisodeFeed, parse_camera_map
from ..store import StoreError

__all__ = [
    "DATASET_FORMS",
    "DATASET_HELP",
    "DatasetSpec",
    "SyntheticSource",
    "open_source",
    "parse_dataset",
    "source_of",
]

DATASET_FORMS = "synthetic:N | droid:PATH | lerobot:PATH | PATH"
DATASET_HELP = (
    "synthetic:N (N samples of the policy's example inputs), droid:PATH (a DROID episode folder or a tree "
    "of them), lerobot:PATH (a LeRobot v3.0 dataset root), or PATH (either of the two, format detected)."
)


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
) -> SyntheticSource | EpisodeFeed:
    """The samples of ``dataset`` (a spec, see :func:`parse_dataset`, or one already parsed) as the
    policy's inputs. ``camera_map`` renames dataset cameras to the policy's (dataset camera ->
    policy camera; a dict or ``"side=varied_camera_1,wrist=hand_camera"``)."""
    if isinstance(camera_map, str):
        camera_map = parse_camera_map(camera_map)
    spec = dataset if isinstance(dataset, DatasetSpec) else parse_dataset(dataset)
    check_camera_map_applies(spec, camera_map)
    if spec.kind == "synthetic":
        return SyntheticSource(model, spec.n)
    return EpisodeFeed(model, spec.episodes, camera_map)


def source_of(model: nn.Module, manifest: Mapping) -> SyntheticSource | EpisodeFeed:
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
