"""Episodes on disk (LeRobot / DROID) as the diffusion trainer's ``obs`` / ``action`` arrays.

A diffusion policy reads a state vector, no camera: its ``obs`` is the episode's recorded state
(LeRobot ``observation.state``; DROID ``observation/policylens/state``, else the robot state), its
``action`` the recorded actions. Every episode is checked against the policy's ``obs_dim`` /
``action_dim`` (and for finite values) before any training starts; a mismatch raises
``data.FeedError`` naming the episode, the field, the sizes and the fix. :func:`dataset_config` sizes
a policy from the data instead (its first episode's state and action widths).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data import Episode, FeedError, open_episodes
from ._config import DiffusionPolicyConfig
from ._reach import REACH_CONFIG

__all__ = ["dataset_config", "dataset_episodes"]

STATE_FIELDS = {"lerobot": "'observation.state'", "droid": "'observation/policylens/state' (else the robot state)"}
ACTION_FIELDS = {"lerobot": "'action'", "droid": "'action' (cartesian position + gripper)"}


def _form(dataset: str) -> str:
    """``lerobot`` or ``droid``: the format ``open_episodes`` reads ``dataset`` as."""
    kind, sep, _ = str(dataset).partition(":")
    if sep and kind in ("droid", "lerobot"):
        return kind
    return "lerobot" if (Path(dataset) / "meta" / "info.json").is_file() else "droid"


def _opened(dataset: str, opened: list[Episode] | None) -> list[Episode]:
    """``opened`` (the episodes a caller already opened from ``dataset``), else ``dataset``'s; none refused."""
    found = open_episodes(dataset) if opened is None else opened
    if not found:
        raise FeedError(f"dataset {dataset!r} holds no episodes")
    return found


def dataset_config(dataset: str, opened: list[Episode] | None = None, **overrides) -> DiffusionPolicyConfig:
    """A policy sized from ``dataset``: ``obs_dim`` / ``action_dim`` from its first episode's state and
    actions, the reach policy's horizon and chunking (:data:`REACH_CONFIG`), any field overridden
    (``n_emb=64``, ...). No suite or task is recorded: the data's robot is not a simulator's.
    :func:`dataset_episodes` then checks every episode against it (``opened``: ``open_episodes(dataset)``
    already made, so that the two calls open the dataset once)."""
    first, form = _opened(dataset, opened)[0], _form(dataset)
    widths = {}
    for name, value, field in (
        ("obs_dim", first.state, STATE_FIELDS[form]),
        ("action_dim", first.actions, ACTION_FIELDS[form]),
    ):
        shape = np.shape(value)
        if len(shape) != 2 or shape[1] < 1:
            raise FeedError(
                f"episode 0 ({first.path}): {field} has shape {shape}; a policy sized from the data needs "
                "(steps, width) values there"
            )
        widths[name] = int(shape[1])
    return DiffusionPolicyConfig(**{**REACH_CONFIG, **widths, **overrides})


def dataset_episodes(
    config: DiffusionPolicyConfig,
    dataset: str,
    episodes: int | None = None,
    hint: str = "",
    opened: list[Episode] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The first ``episodes`` (default: all) episodes of ``dataset`` (``lerobot:PATH``, ``droid:PATH`` or
    ``PATH``) as ``{"obs": (T, obs_dim), "action": (T, action_dim)}`` float32 dicts for
    :func:`train_diffusion_policy`, every one checked first. ``hint``: how to record a dataset that fits
    (added to a size mismatch's fix); ``opened``: ``open_episodes(dataset)`` already made."""
    if episodes is not None and episodes < 1:
        raise FeedError(f"episodes={episodes}: expected at least 1 episode of dataset {dataset!r}")
    found = _opened(dataset, opened)
    if episodes is not None and episodes > len(found):
        raise FeedError(f"dataset {dataset!r} holds {len(found)} episodes; {episodes} were asked for (pass fewer)")
    form, fix = _form(dataset), f" ({hint})" if hint else ""
    out = []
    for e, ep in enumerate(found[:episodes]):
        where = f"episode {e} ({ep.path})"
        arrays = {}
        for key, value, field, want, name in (
            ("obs", ep.state, STATE_FIELDS[form], config.obs_dim, "obs_dim"),
            ("action", ep.actions, ACTION_FIELDS[form], config.action_dim, "action_dim"),
        ):
            arr = np.asarray(value, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != want:
                got = f"{arr.shape[1]}-D" if arr.ndim == 2 else f"shape {arr.shape}"
                raise FeedError(
                    f"{where}: {field} is {got} but the policy reads {want}-D (config.{name}={want}); train on a "
                    f"dataset with {want}-D {key} values{fix}, or a policy of config.{name}={arr.shape[-1]}"
                )
            if len(arr) == 0:
                raise FeedError(f"{where} has no steps; leave it out of the dataset or pass --episodes")
            bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            if bad.size:
                raise FeedError(f"{where}: {field} is not finite at step {int(bad[0])}; fix or drop the episode")
            arrays[key] = arr
        out.append(arrays)
    return out
