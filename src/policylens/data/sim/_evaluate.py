"""Closed-loop evaluation: roll a policy out in SimEnv and report success with a Wilson interval."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..._intervals import EvalResult
from .._seeds import eval_layout_seed
from ._env import CAMERAS, SimEnv


class ChunkedPolicy:
    """Adapt a chunk predictor to ``act(obs)``: predict (horizon, 7), execute the first ``k``.

    ``predictor`` is a callable ``obs -> (horizon, 7)`` or an object with ``predict_chunk(obs)``.
    """

    def __init__(self, predictor, k: int = 4) -> None:
        if k < 1:
            raise ValueError(f"k (actions executed per chunk) must be >= 1, got {k}")
        self.predict = getattr(predictor, "predict_chunk", predictor)
        self.inner, self.k = predictor, k
        self.queue: list[np.ndarray] = []

    def bind(self, env) -> None:
        """Hand the environment to a predictor that reads it (e.g. camera calibration), if it wants it."""
        if hasattr(self.inner, "bind"):
            self.inner.bind(env)

    def reset(self) -> None:
        self.queue = []
        if hasattr(self.inner, "reset"):
            self.inner.reset()

    def act(self, obs: dict) -> np.ndarray:
        if not self.queue:
            chunk = np.asarray(self.predict(obs), dtype=np.float32)  # (horizon, 7)
            if chunk.ndim != 2 or chunk.shape[1] != 7:
                raise ValueError(f"the predictor must return a (horizon, 7) chunk, got shape {chunk.shape}")
            self.queue = list(chunk[: self.k])
        return self.queue.pop(0)


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
) -> EvalResult:
    """Run ``episodes`` closed-loop rollouts of ``policy`` (``act(obs) -> (7,)``, optional ``reset()``)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not hasattr(policy, "act"):
        raise TypeError(f"policy must have act(obs) -> np.ndarray (7,); got {type(policy).__name__}")
    result = EvalResult(0, 0)
    with SimEnv(task, seed=seed, image_size=image_size, render=render, cameras=cameras) as env:
        if hasattr(policy, "bind"):
            policy.bind(env)
        limit = max_steps or env.task.max_steps
        bar = tqdm(range(episodes), desc=f"eval {task}", disable=not progress)
        for i in bar:
            obs = env.reset(seed=eval_layout_seed(seed, i))
            if hasattr(policy, "reset"):
                policy.reset()
            success, t = False, 0
            while t < limit:
                obs, done, info = env.step(policy.act(obs))
                t, success = t + 1, info["success"]
                if done:
                    break
            result.successes += int(success)
            result.n += 1
            result.episode_success.append(bool(success))
            result.episode_length.append(t)
            bar.set_postfix(success=f"{result.success_rate:.0%}")
    return result
