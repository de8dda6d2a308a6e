"""Training recipes of the shipped diffusion policies: simulated expert episodes -> a trained policy.

Each recipe records its episodes with DART-style action noise (executed noisy, recorded clean) and
trains a ``TinyDiffusionPolicy`` with ``models.diffusion.train_diffusion_policy``. ``policylens train
diffusion`` calls them; docs/diffusion_policy.md and docs/reference_policies.md say how the shipped
checkpoints were made.

A recipe given ``out_dir`` (and not ``overwrite``) refuses a directory that holds another run before it
makes a single episode; :func:`check_reach_run` / :func:`check_metaworld_run` do the same check for the
settings ``policylens train diffusion`` records (``reach_run_settings`` / ``metaworld_run_settings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the models load when a recipe runs, not when policylens.sim is imported
    from ..models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy

__all__ = [
    "check_metaworld_run",
    "check_reach_run",
    "metaworld_run_settings",
    "reach_run_settings",
    "train_metaworld_policy",
    "train_reach_policy",
]


def reach_run_settings(*, action_noise: float) -> dict:
    """What a reach recipe run records about its data (``run_settings=``)."""
    return {"task": "reach", "action_noise": action_noise}


def metaworld_run_settings(task: str, *, action_noise: float) -> dict:
    """What a MetaWorld recipe run of ``task`` records about its data (``run_settings=``)."""
    return {"suite": "metaworld", "task": task, "action_noise": action_noise}


def _check_run(
    out_dir: str | Path, config: Mapping | None, *, episodes: int, seed: int, train: Mapping, data: Mapping
) -> bool:
    """``runs.check_run_dir`` on the settings known before the episodes exist (not their window count)."""
    from ..runs import check_run_dir

    if episodes < 1:
        raise ValueError(f"episodes={episodes}; expected the number of expert episodes to make, >= 1")
    known = {"train": {**train, "seed": seed}, "data": {"episodes": episodes, **data}}
    if config is not None:
        known["config"] = dict(config)
    return check_run_dir(out_dir, known, partial=True)


def _check_recipe_run(config: DiffusionPolicyConfig, episodes: int, seed: int, train_kwargs: Mapping) -> None:
    """Refuse ``train_kwargs["out_dir"]`` when it holds another run (unless ``overwrite``), before any episode."""
    out_dir = train_kwargs.get("out_dir")
    if out_dir is None or train_kwargs.get("overwrite", False):
        return
    train = {k: train_kwargs[k] for k in ("batch_size", "lr", "weight_decay") if k in train_kwargs}
    data = train_kwargs.get("run_settings") or {}
    _check_run(out_dir, config.to_dict(), episodes=episodes, seed=seed, train=train, data=data)


def check_reach_run(
    out_dir: str | Path, *, episodes: int, batch_size: int, lr: float, seed: int, action_noise: float
) -> bool:
    """Refuse ``out_dir`` (``runs.RunDirError``) if it holds another run than a reach recipe run with these
    settings and :func:`reach_run_settings` would record; True when it holds this run (a rerun resumes),
    False when it holds none. Cheap: call it before minutes of episodes."""
    train = {"batch_size": batch_size, "lr": lr}
    data = reach_run_settings(action_noise=action_noise)
    return _check_run(out_dir, None, episodes=episodes, seed=seed, train=train, data=data)


def check_metaworld_run(
    out_dir: str | Path,
    config: DiffusionPolicyConfig,
    *,
    episodes: int,
    batch_size: int,
    lr: float,
    seed: int,
    action_noise: float,
) -> bool:
    """As :func:`check_reach_run`, for a MetaWorld recipe run of ``config`` (its task, its model settings)
    recording :func:`metaworld_run_settings`."""
    if config.suite != "metaworld":
        raise ValueError(f"config records suite={config.suite!r}; a MetaWorld run needs a metaworld_config(task)")
    train = {"batch_size": batch_size, "lr": lr}
    data = metaworld_run_settings(config.task, action_noise=action_noise)
    return _check_run(out_dir, config.to_dict(), episodes=episodes, seed=seed, train=train, data=data)


def train_reach_policy(
    n_episodes: int = 1500,
    steps: int = 6000,
    seed: int = 0,
    log_dir: str | Path | None = None,
    action_noise: float = 0.02,
    **train_kwargs,
) -> TinyDiffusionPolicy:
    """Expert pybullet reach episodes (``action_noise`` metres of noise) -> a trained policy."""
    from ..models.diffusion import REACH_CONFIG, DiffusionPolicyConfig, train_diffusion_policy
    from .pybullet import make_training_episodes

    config = DiffusionPolicyConfig(**REACH_CONFIG)
    _check_recipe_run(config, n_episodes, seed, train_kwargs)
    progress = train_kwargs.get("progress", True)  # rank 0's under torchrun
    episodes = make_training_episodes("reach", n_episodes, seed=seed, action_noise=action_noise, progress=progress)
    return train_diffusion_policy(episodes, config, steps=steps, seed=seed, log_dir=log_dir, **train_kwargs)


def train_metaworld_policy(
    task: str,
    n_episodes: int = 200,
    steps: int = 12000,
    seed: int = 0,
    action_noise: float = 0.1,
    config: DiffusionPolicyConfig | None = None,
    progress: bool = True,
    **train_kwargs,
) -> TinyDiffusionPolicy:
    """``n_episodes`` successful expert episodes of MetaWorld ``task`` on training layouts -> a trained policy."""
    from ..models.diffusion import metaworld_config, train_diffusion_policy
    from .metaworld import make_training_episodes

    config = config or metaworld_config(task)
    if config.task != task or config.suite != "metaworld":
        raise ValueError(f"config records suite={config.suite!r} task={config.task!r}; expected 'metaworld', {task!r}")
    _check_recipe_run(config, n_episodes, seed, train_kwargs)
    episodes = make_training_episodes(task, n_episodes, seed=seed, action_noise=action_noise, progress=progress)
    return train_diffusion_policy(episodes, config, steps=steps, seed=seed, progress=progress, **train_kwargs)
