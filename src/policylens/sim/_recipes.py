"""Training recipes of the shipped diffusion policies: simulated expert episodes -> a trained policy.

Each recipe records its episodes with DART-style action noise (executed noisy, recorded clean) and
trains a ``TinyDiffusionPolicy`` with ``models.diffusion.train_diffusion_policy``. ``policylens train
diffusion`` calls them; docs/diffusion_policy.md and docs/reference_policies.md say how the shipped
checkpoints were made.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the models load when a recipe runs, not when policylens.sim is imported
    from ..models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy


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

    episodes = make_training_episodes("reach", n_episodes, seed=seed, action_noise=action_noise)
    config = DiffusionPolicyConfig(**REACH_CONFIG)
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
    episodes = make_training_episodes(task, n_episodes, seed=seed, action_noise=action_noise, progress=progress)
    return train_diffusion_policy(episodes, config, steps=steps, seed=seed, progress=progress, **train_kwargs)
