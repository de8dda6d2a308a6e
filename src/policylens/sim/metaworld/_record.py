"""Record MetaWorld episodes: one rollout into a dict of arrays, and expert episodes for trainers.

A recording has the keys the LeRobot writer reads: ``actions`` (T, 4), ``state`` (T, 39),
``proprio`` (T, 4) = hand xyz + gripper opening, ``timestamps`` (T,), ``instruction``, ``success``,
``task``, ``seed``, ``fps``, ``image_size``, ``scene`` (the layout), ``intrinsics`` {camera: (3, 3)},
``extrinsics`` {camera: (T, 4, 4)}, with cameras ``images`` {camera: (T, H, W, 3) uint8}; and
``hand_targets`` (T, 3), where each action sent the hand (the DROID export's absolute targets).
Observation t is taken before action t is executed (DROID's convention).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .._seeds import train_layout_seed
from ._env import CONTROL_HZ, MetaWorldEnv
from ._experts import MetaWorldExpert


def record_episode(env: MetaWorldEnv, seed: int, policy=None, action_noise: float = 0.0) -> dict:
    """Roll ``policy`` (a batch policy; default the task's expert) out from layout ``seed``.

    ``action_noise`` > 0 executes each action with N(0, action_noise^2) added to its xyz (action
    units: 1 = 1 cm of hand motion per step; clipped to [-1, 1]) while the clean action is
    recorded: DART-style data (Laskey et al. 2017) that shows a cloned policy the way back to the
    expert's path. The noise is seeded by ``seed``.
    """
    if action_noise < 0:
        raise ValueError(f"action_noise={action_noise}: expected >= 0 (action units, 1 = 1 cm per step)")
    policy = policy or MetaWorldExpert(env.task)
    if hasattr(policy, "reset"):
        policy.reset(np.zeros(1, dtype=int))
    noise = np.random.default_rng([int(seed), 7])
    obs = env.reset(seed)
    keys = ("actions", "state", "proprio", "hand_targets")
    rec: dict = {k: [] for k in keys}
    frames: dict[str, list] = {c: [] for c in env.cameras}
    extrinsics: dict[str, list] = {c: [] for c in env.cameras}
    done, info = False, {"success": False}
    while not done:
        for cam, cal in env.calibration().items():
            frames[cam].append(obs["images"][cam])
            extrinsics[cam].append(cal["extrinsics"])
        action = np.asarray(policy.act(obs["state"][None], np.zeros(1, dtype=int))[0], dtype=np.float32)
        executed = action.copy()
        if action_noise > 0:
            executed[:3] = np.clip(executed[:3] + noise.normal(0.0, action_noise, 3), -1.0, 1.0)
        rec["actions"].append(action)
        rec["state"].append(obs["state"])
        rec["proprio"].append(obs["state"][:4])
        obs, done, info = env.step(executed)
        rec["hand_targets"].append(env.hand_target())
    out = {k: np.asarray(v, dtype=np.float32) for k, v in rec.items()}
    out["timestamps"] = np.arange(len(out["actions"]), dtype=np.float64) / CONTROL_HZ
    out["intrinsics"] = {c: cal["intrinsics"] for c, cal in env.calibration().items()}
    out["extrinsics"] = {c: np.asarray(v) for c, v in extrinsics.items()}
    if env.cameras:
        out["images"] = {c: np.stack(v) for c, v in frames.items()}
    out.update(
        instruction=env.instruction,
        success=bool(info["success"]),
        task=env.task,
        seed=int(seed),
        fps=CONTROL_HZ,
        image_size=env.image_size if env.cameras else 0,
        scene={"suite": "metaworld", "task": env.task, **env.layout()},
    )
    return out


def make_training_episodes(
    task: str,
    n: int,
    seed: int = 0,
    action_noise: float = 0.0,
    keep_failures: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """``n`` in-memory expert episodes of ``task`` on training layouts: ``obs`` (T, 39), ``action`` (T, 4),
    ``instruction``, ``success``, ``seed``.

    Expert failures (a few percent on harder tasks, more with noise) are skipped unless
    ``keep_failures``: layouts ``train_layout_seed(seed, 0), (seed, 1), ...`` are tried in order until
    ``n`` episodes are kept (at most ``3 n`` tries), so the result is deterministic.
    """
    if n < 1:
        raise ValueError(f"n={n}: expected >= 1 episodes")
    out: list[dict] = []
    tries = 0
    with MetaWorldEnv(task, max_steps=max_steps) as env:
        expert = MetaWorldExpert(task)
        bar = tqdm(total=n, desc=f"{task} expert episodes", disable=not progress)
        while len(out) < n:
            if tries >= 3 * n:
                raise RuntimeError(
                    f"{task}: the expert succeeded in only {len(out)} of {tries} episodes with action_noise="
                    f"{action_noise}; lower action_noise or pass keep_failures=True"
                )
            layout = train_layout_seed(seed, tries)
            rec = record_episode(env, layout, expert, action_noise=action_noise)
            tries += 1
            if rec["success"] or keep_failures:
                out.append(
                    {
                        "obs": rec["state"],
                        "action": rec["actions"],
                        "instruction": rec["instruction"],
                        "success": rec["success"],
                        "seed": layout,
                    }
                )
                bar.update(1)
        bar.set_postfix(tries=tries)
        bar.close()
    return out
