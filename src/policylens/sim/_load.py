"""``load_agent(spec, suite, task)``: a checkpoint (or the scripted expert) as a simulator agent.

pybullet: ``"expert"`` -> :class:`~policylens.sim.pybullet.ExpertPolicy`; a ``TinyDiffusionPolicy``
-> windows of states, its ``n_action_steps`` per chunk, noise reseeded per episode; a policy with
``act(obs)`` as it is; a VLA with ``make_batch`` / ``sample_actions`` (TinyVLA, a LeRobot teacher)
-> the first half of each ``chunk_size`` chunk, one batched call over the environments, noise
reseeded per episode; any other chunk predictor -> the first half of each chunk, one call each.

MetaWorld: ``"expert"`` -> the task's scripted expert; else a state-based ``TinyDiffusionPolicy`` for
that task (``"metaworld"``, ``metaworld/<task>``, a run, or a directory of per-task runs), stepped
over a batch of environments with one noise generator per run.
"""

from __future__ import annotations

from pathlib import Path

from ._agent import ChunkedPolicy, diffusion_agent, vla_agent

SUITES = ("pybullet", "metaworld")


def load_agent(spec: str, suite: str = "pybullet", task: str | None = None, *, seed: int = 0, **predict_kwargs):
    """The agent for ``spec`` (``"expert"`` or a checkpoint for ``models.load_policy``) on ``suite``'s ``task``."""
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r}: choose from {SUITES}")
    if suite == "metaworld":
        if not task:
            raise ValueError("task: MetaWorld agents are per task; pass e.g. task='pick-place-v3'")
        return _metaworld_agent(spec, task, seed, predict_kwargs)
    return _pybullet_agent(spec, seed, predict_kwargs)


def _pybullet_agent(spec: str, seed: int, predict_kwargs: dict):
    import torch

    from ..models import TinyDiffusionPolicy, load_policy
    from .pybullet import ExpertPolicy

    if spec == "expert":
        return ExpertPolicy()
    torch.manual_seed(seed)
    policy = load_policy(spec)
    if isinstance(policy, TinyDiffusionPolicy):
        return diffusion_agent(policy, seed=seed, noise="episode", **predict_kwargs)
    if all(hasattr(policy, a) for a in ("make_batch", "sample_actions", "noise_shape")):
        return vla_agent(policy, seed=seed, **predict_kwargs)  # batched, noise seeded per episode; steps=...
    if predict_kwargs:
        raise ValueError(f"{sorted(predict_kwargs)}: prediction options are for diffusion policies and VLAs")
    if hasattr(policy, "act"):
        return policy
    config = getattr(policy, "config", None)
    return ChunkedPolicy(
        policy,
        k=max(1, getattr(config, "chunk_size", 8) // 2),
        image_size=getattr(config, "image_size", None),  # rendered at the size the policy was trained on
        cameras=getattr(config, "cameras", None),  # and only the cameras it reads
    )


def _metaworld_agent(spec: str, task: str, seed: int, predict_kwargs: dict):
    from ..models import TinyDiffusionPolicy, load_policy
    from .metaworld import MetaWorldExpert, check_policy_task, resolve_policy

    if spec == "expert":
        return MetaWorldExpert(task)
    where = resolve_policy(spec, task)
    policy = load_policy(where)
    if not isinstance(policy, TinyDiffusionPolicy):
        raise ValueError(
            f"policy {where} is a {type(policy).__name__}; MetaWorld evaluation takes state-based "
            "TinyDiffusionPolicy checkpoints or 'expert'"
        )
    check_policy_task(policy.config, task, str(Path(where)))
    return diffusion_agent(policy, seed=seed, noise="run", **predict_kwargs)
