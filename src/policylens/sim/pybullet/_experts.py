"""Scripted IK experts for every task, and ExpertPolicy wrapping them in the policy interface.

Each expert reads the simulator's privileged state and returns a 7-D absolute ee target, moving
at most ``MAX_STEP`` metres per 15 Hz control step.  Phase memory lives in ``env.expert_memory``.
"""

from __future__ import annotations

import numpy as np

from ._scene import SHAPES
from ._tasks import hover_goal, in_tray, lift_goal, reach_goal

MAX_STEP = 0.05  # m per control step (0.75 m/s)


def _toward(env, goal: np.ndarray, gripper: float, max_step: float = MAX_STEP) -> np.ndarray:
    ee = env.ee_position()
    delta = goal - ee
    n = np.linalg.norm(delta)
    if n > max_step:
        delta *= max_step / n
    return np.array([*(ee + delta), 0.0, 0.0, 0.0, gripper])


def _reach_expert(env) -> np.ndarray:
    return _toward(env, reach_goal(env), 0.0)


def _hover_expert(env) -> np.ndarray:
    return _toward(env, hover_goal(env), 0.0)


def _lift_expert(env) -> np.ndarray:
    return _toward(env, lift_goal(env), 0.0)


def _tray_expert(env) -> np.ndarray:
    m = env.expert_memory
    phase = m.setdefault("phase", "above")
    spec = env.scene_spec
    obj = env.scene.object_positions()[spec.target]
    half = SHAPES[spec.objects[spec.target].shape]
    ee = env.ee_position()
    tray = np.array([*spec.tray_xy, 0.0])
    if phase in ("lift", "carry") and obj[2] < half + 0.01 and ee[2] > half + 0.05:
        phase = m["phase"] = "above"  # dropped it: start over
    if phase == "above":
        goal = obj + np.array([0.0, 0.0, 0.10])
        if np.linalg.norm(goal - ee) < 0.015:
            m["phase"] = "descend"
        return _toward(env, goal, 0.0)
    if phase == "descend":
        goal = obj + np.array([0.0, 0.0, 0.005])
        if np.linalg.norm(goal - ee) < 0.01:
            m["phase"], m["count"] = "close", 0
        return _toward(env, goal, 0.0, 0.03)
    if phase == "close":
        m["count"] += 1
        if m["count"] >= 5:
            m["phase"] = "lift"
        return np.array([*ee, 0.0, 0.0, 0.0, 1.0])
    if phase == "lift":
        goal = np.array([ee[0], ee[1], 0.2])
        if abs(ee[2] - 0.2) < 0.02:
            m["phase"] = "carry"
        return _toward(env, goal, 1.0)
    if phase == "carry":
        goal = tray + np.array([0.0, 0.0, 0.15])
        if np.linalg.norm(goal - ee) < 0.02:
            m["phase"] = "release"
        return _toward(env, goal, 1.0)
    # release: open above the tray, then rise a little
    goal = tray + np.array([0.0, 0.0, 0.18 if in_tray(env) else 0.15])
    return _toward(env, goal, 0.0)


EXPERTS = {"reach": _reach_expert, "put_in_tray": _tray_expert, "hover": _hover_expert, "lift": _lift_expert}


def expert_action(env) -> np.ndarray:
    """The scripted expert's next action (7,) for ``env``'s task."""
    return EXPERTS[env.task.name](env).astype(np.float32)


class ExpertPolicy:
    """The scripted expert behind the ``reset()`` / ``act(obs)`` policy interface.

    It needs the live environment (privileged state), given once with ``bind(env)``;
    ``evaluate_policy`` binds it automatically.
    """

    def __init__(self, env=None) -> None:
        self.env = env

    def bind(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        if self.env is not None:
            self.env.expert_memory = {}

    def act(self, obs: dict) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("ExpertPolicy has no environment: call policy.bind(env) before act(obs)")
        return expert_action(self.env)
