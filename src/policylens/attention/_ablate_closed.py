"""Closed-loop ablation: simulated rollouts with every observation ablated before the policy sees it,
paired with the unablated rollouts on the same layouts and flow noise.

The agent is the simulator's own (``policylens.sim.load_agent`` / ``vla_agent``: a ``ChunkedPolicy``
over ``VLAChunks``); :func:`ablated_agent` puts :class:`AblatedChunks` in front of its predictor, so
each observation is ablated, then goes through the policy's batch (``removed`` cameras through its
own missing-camera path) with the flow noise of the predictor's per-episode generators. The
evaluator (``evaluate_policy(..., batch=N)``) runs episode ``i`` on the same layout for every
condition and the agent draws episode ``i``'s noise from the same generator, so the outcomes are
paired episode by episode (the unablated run is the condition None, through the same code).

In closed loop ``time`` shows the camera's first frame of the episode (a frozen camera) and
``instruction:other`` names another object of the layout (the next one after the target).
"""

from __future__ import annotations

import numpy as np
import torch

from ._ablate_conditions import Condition, apply_condition, other_object_instruction
from ._ablate_removal import policy_batch

__all__ = ["AblatedChunks", "ablated_agent", "check_rollout", "rollout_condition"]


def _layout(task: str, seed: int, episode: int):
    """(target name, every object's name, the instruction) of evaluation episode ``episode``."""
    from ..sim import eval_layout_seed
    from ..sim.pybullet import get_task

    spec_task = get_task(task)
    spec = spec_task.sample(np.random.default_rng(eval_layout_seed(int(seed), int(episode))))
    return spec.objects[spec.target].name, [o.name for o in spec.objects], spec_task.instruction(spec)


class AblatedChunks:
    """A batch predictor: ``inner`` (a ``VLAChunks``: ``model`` and per-episode ``generator(slot)``)
    on observations ablated by ``condition`` (None: unablated)."""

    def __init__(self, inner, condition: Condition | None, task: str, seed: int) -> None:
        for need in ("model", "generator", "reset"):
            if not hasattr(inner, need):
                raise ValueError(f"AblatedChunks: the agent's predictor {type(inner).__name__} has no {need}; "
                                 "pass a VLA agent (policylens.sim.vla_agent / load_agent of a VLA)")  # fmt: skip
        self.inner, self.model, self.condition, self.task, self.seed = inner, inner.model, condition, task, int(seed)
        self.first: dict[int, dict] = {}
        self.rng: dict[int, np.random.Generator] = {}

    def reset(self, slots, episodes=None) -> None:
        self.inner.reset(slots, episodes)
        for s in slots:
            self.first.pop(s, None)
            self.rng[s] = np.random.default_rng([self.seed, self.inner.episodes[s]])

    def _other(self, instruction: str, slot: int) -> str:
        target, names, expected = _layout(self.task, self.seed, self.inner.episodes[slot])
        if expected != instruction:
            raise RuntimeError(
                f"instruction:other: episode {self.inner.episodes[slot]} says {instruction!r} but its layout gives "
                f"{expected!r}; policylens.sim's evaluation layout seeds changed"
            )
        other = other_object_instruction(instruction, target, names)
        return instruction if other is None else other

    def predict_batch(self, windows: list[list], slots: list[int]) -> np.ndarray:
        from ..data import robot_state

        cams, cond = list(self.model.config.cameras), self.condition
        parts = []
        for w, s in zip(windows, slots, strict=True):
            obs = w[-1]
            images = {c: np.asarray(obs["images"][c])[None] for c in cams}  # (1, H, W, 3)
            self.first.setdefault(s, images)
            other = [self._other(obs["instruction"], s)] if cond is not None and cond.kind == "other" else None
            text = [obs["instruction"]]
            parts.append(apply_condition(cond, images, text, self.rng[s], other_time=self.first[s], other_texts=other))
        images = {c: np.concatenate([p.images[c] for p in parts]) for c in cams}
        state = np.stack([robot_state(w[-1]) for w in windows])
        batch = policy_batch(self.model, images, [t for p in parts for t in p.texts], state, parts[0].removed)
        shape = tuple(self.model.noise_shape)
        noise = torch.stack([torch.randn(shape, generator=self.inner.generator(s)) for s in slots])
        return self.model.sample_actions(batch, noise=noise).float().cpu().numpy()


def ablated_agent(agent, condition: Condition | None, task: str, seed: int):
    """``agent`` (a ``ChunkedPolicy`` over a VLA predictor) with every observation ablated first."""
    from ..sim import ChunkedPolicy

    if not isinstance(agent, ChunkedPolicy):
        raise ValueError(f"ablated_agent: expected a ChunkedPolicy (sim.load_agent), got {type(agent).__name__}")
    inner = AblatedChunks(agent.inner, condition, task, seed)
    return ChunkedPolicy(
        inner, agent.k, image_size=agent.image_size, cameras=agent.cameras, action_dim=agent.action_dim
    )


def check_rollout(model) -> str | None:
    """Why ``model`` cannot be rolled out in the pybullet simulator, or None."""
    from ..sim.pybullet import CAMERAS

    missing = [n for n in ("make_batch", "sample_actions", "noise_shape") if not hasattr(model, n)]
    if missing:
        return f"{type(model).__name__} has no {missing} (the simulator's VLA agent needs them)"
    cams = [c for c in model.config.cameras if c not in CAMERAS]
    if cams:
        return f"the policy reads cameras {cams} that the simulator does not render (it renders {list(CAMERAS)})"
    return None


def rollout_condition(
    model, condition: Condition | None, task: str = "reach", episodes: int = 50, seed: int = 0,
    batch: int = 10, max_steps: int | None = None, progress: bool = False,
):  # fmt: skip
    """Success of ``model`` under ``condition`` on ``episodes`` held-out layouts of ``task``: the
    simulator's ``EvalResult`` (``episode_success`` per episode, in episode order)."""
    from ..sim import vla_agent
    from ..sim.pybullet import evaluate_policy

    why = check_rollout(model)
    if why:
        raise ValueError(f"closed loop: {why}")
    agent = ablated_agent(vla_agent(model, seed=seed), condition, task, seed)
    kw = {"image_size": agent.image_size, "cameras": agent.cameras, "max_steps": max_steps, "progress": progress}
    return evaluate_policy(agent, task, episodes, seed, batch=batch, **kw)
