"""Reference diffusion policies on MetaWorld: one per task, trained on the scripted expert's episodes.

State observations (39-D) and MetaWorld's 4-D actions; sizes small enough that a checkpoint is
1.2 MB of float32 safetensors and trains in minutes on one CPU thread. The config records
``suite="metaworld"`` and the task, so an evaluation on another task is refused.
``policylens.sim.train_metaworld_policy`` trains one (``policylens train diffusion --suite metaworld
--task TASK``, the command in docs/reference_policies.md); ``load_policy("metaworld/TASK")`` loads
the shipped copy.
"""

from __future__ import annotations

from pathlib import Path

from ._config import DiffusionPolicyConfig

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
