"""Closed-loop evaluation: roll a policy out in SimEnv and report success with a Wilson interval.

The policy is any agent with ``act(obs) -> (7,)``: the scripted ``ExpertPolicy``, or a chunk policy
run through ``policylens.sim.ChunkedPolicy`` (history + chunk queue; ``policylens.sim.load_agent``).
"""

from __future__ import annotations

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
