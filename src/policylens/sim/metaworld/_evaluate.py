"""Batched closed-loop evaluation: ``batch`` environments stepped together, one policy call per step.

Each control step the policy sees the observations of every environment still running, as one
(n, 39) array, and returns (n, 4) actions. An environment whose episode ended (success, or
``max_steps``) is masked out: it is not stepped and its row is not passed again; when episodes are
left it starts the next one at once (and the policy's ``reset(slots)`` is called for it). Episode
``i`` always runs on evaluation layout ``eval_layout_seed(seed, i)``, whatever slot it lands in, so
a deterministic policy gives the same per-episode outcomes at every batch size.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from tqdm.auto import tqdm

from ..._intervals import EvalResult
from .._seeds import eval_layout_seed
from ._env import ACTION_DIM, STATE_DIM, MetaWorldEnv

DEFAULT_BATCH = 25


def evaluate_metaworld(
    policy,
    task: str,
    episodes: int = 50,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
    max_steps: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Success of ``policy`` over ``episodes`` rollouts of ``task``, with the Wilson 95% interval.

    ``policy``: ``act(states (n, 39), slots (n,)) -> (n, 4)`` and optionally ``reset(slots)`` (see
    ``MetaWorldExpert``, ``DiffusionBatchPolicy``). Success is MetaWorld's ``info["success"]`` at any
    step; an episode ends at its first success or after ``max_steps`` (default 500).
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: expected >= 1")
    if batch < 1:
        raise ValueError(f"batch={batch}: expected >= 1 environments stepped together")
    if not hasattr(policy, "act"):
        raise TypeError(f"policy must have act(states (n, 39), slots) -> (n, 4); got {type(policy).__name__}")
    n_slots = min(batch, episodes)
    envs = [MetaWorldEnv(task, max_steps=max_steps) for _ in range(n_slots)]
    pending = deque(range(episodes))
    states = np.zeros((n_slots, STATE_DIM), dtype=np.float32)
    running = np.zeros(n_slots, dtype=bool)
    episode_of = np.full(n_slots, -1)
    success, length = np.zeros(episodes, dtype=bool), np.zeros(episodes, dtype=int)

    def start(slots: list[int]) -> None:
        for s in slots:
            episode_of[s] = i = pending.popleft()
            states[s] = envs[s].reset(eval_layout_seed(seed, i))["state"]
            running[s] = True
        if slots and hasattr(policy, "reset"):
            policy.reset(np.asarray(slots))

    bar = tqdm(total=episodes, desc=f"eval {task} x{n_slots}", disable=not progress)
    try:
        start(list(range(n_slots)))
        while running.any():
            slots = np.flatnonzero(running)
            actions = np.asarray(policy.act(states[slots], slots), dtype=np.float32)  # (n, 4)
            if actions.shape != (len(slots), ACTION_DIM):
                raise ValueError(f"policy.act returned shape {actions.shape}; expected ({len(slots)}, {ACTION_DIM})")
            finished = []
            for s, a in zip(slots.tolist(), actions, strict=True):
                obs, done, info = envs[s].step(a)
                states[s] = obs["state"]
                if done:
                    i = episode_of[s]
                    success[i], length[i] = info["success"], info["t"]
                    running[s] = False
                    finished.append(s)
            if finished:
                bar.set_postfix(success=f"{success.sum()}/{bar.n + len(finished)}", refresh=False)
                bar.update(len(finished))
            start(finished[: len(pending)])
    finally:
        bar.close()
        for env in envs:
            env.close()
    return EvalResult(int(success.sum()), episodes, success.tolist(), length.tolist())


def evaluate_tasks(
    agents: dict, episodes: int = 50, seed: int = 0, batch: int = DEFAULT_BATCH, max_steps: int | None = None
) -> tuple[dict[str, EvalResult], dict[str, float]]:
    """:func:`evaluate_metaworld` of each ``{task: agent}`` in turn -> results and wall-clock seconds per task
    (for ``results_table``). The torch seed is set once from ``seed`` before the first task."""
    import torch

    torch.manual_seed(seed)
    results, seconds = {}, {}
    for task, agent in agents.items():
        start = time.perf_counter()
        results[task] = evaluate_metaworld(agent, task, episodes=episodes, seed=seed, batch=batch, max_steps=max_steps)
        seconds[task] = time.perf_counter() - start
    return results, seconds
