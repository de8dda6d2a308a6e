"""Closed-loop evaluation: roll a policy out in SimEnv and report success with a Wilson interval.

The policy is any agent with ``act(obs) -> (7,)``: the scripted ``ExpertPolicy``, or a chunk policy
run through ``policylens.sim.ChunkedPolicy`` (history + chunk queue; ``policylens.sim.load_agent``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..._intervals import EvalResult
from .._seeds import eval_layout_seed
from ._env import CAMERAS, SimEnv
from ._experts import ExpertPolicy


def evaluate_policy(
    policy,
    task: str = "reach",
    episodes: int = 50,
    seed: int = 0,
    image_size: int = 224,
    render: bool = True,
    cameras=CAMERAS,
    max_steps: int | None = None,
    progress: bool = True,
    batch: int = 1,
    layouts: Sequence[tuple[int, int | None]] | None = None,
) -> EvalResult:
    """Run ``episodes`` closed-loop rollouts of ``policy`` (``act(obs) -> (7,)``, optional ``reset()``).

    ``batch`` > 1 steps that many environments together (the policy a ``policylens.sim.ChunkedPolicy``
    or the ``ExpertPolicy``): each control step ONE ``act(observations, slots)`` call for every
    environment still running; a finished environment starts the next episode at once. Episode ``i``
    runs on ``eval_layout_seed(seed, i)`` and its agent is reset with its index, so a policy whose
    noise is seeded per episode gives the same outcomes at every batch size.

    ``layouts``: run exactly these ``(layout_seed, target)`` pairs instead (``episodes`` is then their
    count; ``target`` an object index, or None for the layout's own): e.g. a task's training layouts
    with each other object named, to score a skill on scenes a fine-tune saw for another one.
    """
    if layouts is not None:
        layouts = [(int(s), None if t is None else int(t)) for s, t in layouts]
        episodes = len(layouts)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if batch < 1:
        raise ValueError(f"batch={batch}: expected >= 1 environments stepped together")
    if not hasattr(policy, "act"):
        raise TypeError(f"policy must have act(obs) -> np.ndarray (7,); got {type(policy).__name__}")
    kw = {"seed": seed, "image_size": image_size, "render": render, "cameras": cameras}
    plan = layouts or [(eval_layout_seed(seed, i), None) for i in range(episodes)]
    if batch > 1:
        return _evaluate_batched(policy, task, plan, min(batch, episodes), max_steps, progress, kw)
    result = EvalResult(0, 0)
    with SimEnv(task, **kw) as env:
        if hasattr(policy, "bind"):
            policy.bind(env)
        limit = max_steps or env.task.max_steps
        bar = tqdm(range(episodes), desc=f"eval {task}", disable=not progress)
        for i in bar:
            obs = env.reset(seed=plan[i][0], target=plan[i][1])
            if hasattr(policy, "reset"):
                policy.reset()
            success, t = False, 0
            while t < limit:
                obs, done, info = env.step(policy.act(obs))
                t, success = t + 1, info["success"]
                if done:
                    break
            _record(result, success, t)
            bar.set_postfix(success=f"{result.success_rate:.0%}")
    return result


def _record(result: EvalResult, success: bool, length: int) -> None:
    result.successes += int(success)
    result.n += 1
    result.episode_success.append(bool(success))
    result.episode_length.append(length)


def _evaluate_batched(policy, task, plan, n_slots, max_steps, progress, kw) -> EvalResult:
    from .._agent import ChunkedPolicy

    if isinstance(policy, ExpertPolicy):
        agents = None  # one expert per environment: it reads the environment's privileged state
    elif isinstance(policy, ChunkedPolicy) and not hasattr(policy.inner, "bind"):
        agents = policy
    else:
        raise ValueError(
            f"batch={n_slots}: a {type(policy).__name__} drives one environment; pass batch=1, or a "
            "policylens.sim.ChunkedPolicy whose predictor reads no environment (load_agent gives one)"
        )
    episodes = len(plan)
    envs = [SimEnv(task, **kw) for _ in range(n_slots)]
    experts = [ExpertPolicy(env) for env in envs]
    pending, obs, episode_of, steps = deque(range(episodes)), {}, {}, {}
    success, length = [False] * episodes, [0] * episodes
    limit = max_steps or envs[0].task.max_steps

    def start(slots: list[int]) -> list[int]:
        slots = slots[: len(pending)]  # the episodes left, one per slot
        for s in slots:
            episode_of[s], steps[s] = pending.popleft(), 0
            layout, target = plan[episode_of[s]]
            obs[s] = envs[s].reset(seed=layout, target=target)
            experts[s].reset()
        if slots and agents is not None:
            agents.reset(slots, episodes=[episode_of[s] for s in slots])
        return slots

    bar = tqdm(total=episodes, desc=f"eval {task} x{n_slots}", disable=not progress)
    try:
        running = start(list(range(n_slots)))
        while running:
            if agents is None:
                actions = [experts[s].act(obs[s]) for s in running]
            else:
                actions = agents.act([obs[s] for s in running], running)
            finished = []
            for s, a in zip(running, actions, strict=True):
                obs[s], done, info = envs[s].step(np.asarray(a))
                steps[s] += 1
                if done or steps[s] >= limit:
                    success[episode_of[s]], length[episode_of[s]] = bool(info["success"]), steps[s]
                    finished.append(s)
            if finished:
                bar.update(len(finished))
                bar.set_postfix(success=f"{sum(success)}/{bar.n}", refresh=False)
            running = [s for s in running if s not in finished] + start(finished)
    finally:
        bar.close()
        for env in envs:
            env.close()
    result = EvalResult(0, 0)
    for ok, t in zip(success, length, strict=True):
        _record(result, ok, t)
    return result


def render_settings(agent, image_size: int = 224, render: bool = True) -> dict:
    """``image_size`` / ``cameras`` / ``render`` for :func:`evaluate_policy` or ``generate_episodes``
    with ``agent``: the scripted expert renders nothing; a policy renders at its own image size and
    cameras (recorded on a ``ChunkedPolicy`` or in its ``config``), else at ``image_size`` with every camera."""
    if isinstance(agent, ExpertPolicy):
        return {"image_size": image_size, "cameras": CAMERAS, "render": False}
    config = getattr(agent, "config", None)
    size = getattr(agent, "image_size", None) or getattr(config, "image_size", None) or image_size
    cameras = getattr(agent, "cameras", None) or getattr(config, "cameras", None) or CAMERAS
    return {"image_size": size, "cameras": tuple(cameras), "render": render}
