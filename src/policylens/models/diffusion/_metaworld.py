"""Reference diffusion policies on MetaWorld: train one per task on the scripted expert's episodes.

State observations (39-D) and MetaWorld's 4-D actions; sizes small enough that a checkpoint is
1.2 MB of float32 safetensors and trains in minutes on one CPU thread. The config records
``suite="metaworld"`` and the task, so an evaluation on another task is refused. Regenerate a
shipped checkpoint with ``policylens train diffusion --suite metaworld --task TASK`` (the command
in docs/reference_policies.md); ``load_policy("metaworld/TASK")`` loads the shipped copy.
"""

from __future__ import annotations

from pathlib import Path

from ._config import DiffusionPolicyConfig
from ._policy import TinyDiffusionPolicy
from ._train import train_diffusion_policy

METAWORLD_CONFIG = {
    "obs_dim": 39,
    "action_dim": 4,
    "horizon": 8,
    "n_obs_steps": 2,
    "n_action_steps": 4,
    "n_layer": 4,
    "n_head": 4,
    "n_emb": 64,
    "suite": "metaworld",
}
METAWORLD_ASSETS = Path(__file__).resolve().parents[2] / "assets" / "diffusion_metaworld"


def metaworld_config(task: str, **overrides) -> DiffusionPolicyConfig:
    """``METAWORLD_CONFIG`` for ``task``, with any field overridden (``n_emb=128``, ...)."""
    return DiffusionPolicyConfig(**{**METAWORLD_CONFIG, "task": task, **overrides})


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
    """``n_episodes`` successful expert episodes of ``task`` on training layouts (executed with
    ``action_noise`` of DART-style noise, recorded clean) -> a trained :class:`TinyDiffusionPolicy`."""
    from policylens.data.metaworld import make_training_episodes

    config = config or metaworld_config(task)
    if config.task != task or config.suite != "metaworld":
        raise ValueError(f"config records suite={config.suite!r} task={config.task!r}; expected 'metaworld', {task!r}")
    episodes = make_training_episodes(task, n_episodes, seed=seed, action_noise=action_noise, progress=progress)
    return train_diffusion_policy(episodes, config, steps=steps, seed=seed, progress=progress, **train_kwargs)
