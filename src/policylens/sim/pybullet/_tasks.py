"""Language-conditioned tasks: layout samplers, instructions and success detectors.

``reach``: "reach the {colour} {shape}" among 2-4 distractors; only the colour-shape pair is
unique, so the instruction decides the target.  ``put_in_tray``: "put the {colour} {shape} in
the tray" among 1-3 distractors (graspable shapes only).  ``hover``: "hover above the {colour}
{shape}" on ``reach``'s layouts (the same layout for the same seed), the goal ``HOVER_HEIGHT``
above the object's top instead of ``REACH_CLEARANCE``: a skill next to ``reach`` that a policy
can only tell apart by its words, so fine-tuning on one can overwrite the other.  ``lift``: "lift
the gripper" on ``reach``'s layouts, the goal ``LIFT_HEIGHT`` straight above the start point: a
skill that needs no object, so a fine-tune learns it quickly, and one that pulls away from every
``reach`` motion (down to an object).  All start the
gripper, pointing down, at a random point of ``START_REGION``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._scene import COLOURS, SHAPES, TRAY_INNER_HALF, ObjectSpec, SceneSpec

REACH_TOLERANCE = 0.04  # m between the gripper point and the spot just above the target
REACH_CLEARANCE = 0.03  # m above the object's top
LIFT_HEIGHT = 0.12  # m above the start point for ``lift``
HOVER_HEIGHT = 0.12  # m above the object's top for ``hover`` (0.09 m above reach's goal: > 2x the tolerance)


@dataclass(frozen=True)
class TaskSpec:
    """A task: its layout sampler, instruction template, success detector and episode length."""

    name: str
    sample: Callable[[np.random.Generator], SceneSpec]
    instruction: Callable[[SceneSpec], str]
    success: Callable[..., bool]
    max_steps: int


def _sample_objects(
    rng: np.random.Generator, n: int, shapes: list[str], region: tuple[float, float, float, float]
) -> list[ObjectSpec]:
    """n objects with distinct (colour, shape) pairs, >= 0.09 m apart inside region (x0, x1, y0, y1)."""
    pairs = [(c, s) for c in COLOURS for s in shapes]
    chosen = rng.choice(len(pairs), size=n, replace=False)
    xs: list[tuple[float, float]] = []
    while len(xs) < n:
        xy = (float(rng.uniform(region[0], region[1])), float(rng.uniform(region[2], region[3])))
        if all((xy[0] - a) ** 2 + (xy[1] - b) ** 2 > 0.09**2 for a, b in xs):
            xs.append(xy)
    return [ObjectSpec(shape=pairs[k][1], colour=pairs[k][0], xy=xy) for k, xy in zip(chosen, xs, strict=True)]


START_REGION = ((0.30, 0.55), (-0.20, 0.20), (0.25, 0.45))  # gripper start box (x, y, z) in metres


def _sample_start(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random gripper start point above the table, so a policy cannot infer its goal from its pose."""
    return tuple(float(rng.uniform(lo, hi)) for lo, hi in START_REGION)


def _sample_reach(rng: np.random.Generator) -> SceneSpec:
    n = int(rng.integers(3, 6))  # target + 2..4 distractors
    objects = _sample_objects(rng, n, list(SHAPES), (0.35, 0.65, -0.25, 0.25))
    return SceneSpec(objects=objects, target=int(rng.integers(n)), start_ee=_sample_start(rng))


def _sample_tray(rng: np.random.Generator) -> SceneSpec:
    n = int(rng.integers(2, 5))  # target + 1..3 distractors
    side = 1.0 if rng.random() < 0.5 else -1.0
    tray = (float(rng.uniform(0.42, 0.55)), side * float(rng.uniform(0.22, 0.28)))
    region = (0.38, 0.62, -0.2, 0.05) if side > 0 else (0.38, 0.62, -0.05, 0.2)
    objects = _sample_objects(rng, n, ["cube", "cylinder"], region)
    return SceneSpec(objects=objects, target=int(rng.integers(n)), tray_xy=tray, start_ee=_sample_start(rng))


def reach_goal(env, clearance: float = REACH_CLEARANCE) -> np.ndarray:
    """The spot ``clearance`` above the target object's top (just above it by default): (3,)."""
    spec = env.scene_spec
    pos = env.scene.object_positions()[spec.target]
    return pos + np.array([0.0, 0.0, SHAPES[spec.objects[spec.target].shape] + clearance])


def hover_goal(env) -> np.ndarray:
    """``hover``'s goal: ``HOVER_HEIGHT`` above the target object's top, (3,)."""
    return reach_goal(env, HOVER_HEIGHT)


def lift_goal(env) -> np.ndarray:
    """``lift``'s goal: ``LIFT_HEIGHT`` straight above the gripper's start point, (3,)."""
    start = env.scene_spec.start_ee
    return np.asarray(start, dtype=np.float64) + np.array([0.0, 0.0, LIFT_HEIGHT])


def _lift_success(env) -> bool:
    return bool(np.linalg.norm(env.ee_position() - lift_goal(env)) < REACH_TOLERANCE)


def _reach_success(env) -> bool:
    return bool(np.linalg.norm(env.ee_position() - reach_goal(env)) < REACH_TOLERANCE)


def _hover_success(env) -> bool:
    return bool(np.linalg.norm(env.ee_position() - hover_goal(env)) < REACH_TOLERANCE)


def in_tray(env) -> bool:
    """The target lies inside the tray footprint, below its rim."""
    spec = env.scene_spec
    pos = env.scene.object_positions()[spec.target]
    dx, dy = pos[0] - spec.tray_xy[0], pos[1] - spec.tray_xy[1]
    return bool(abs(dx) < TRAY_INNER_HALF and abs(dy) < TRAY_INNER_HALF and pos[2] < 0.06)


def _tray_success(env) -> bool:
    return in_tray(env) and env.gripper_command < 0.5  # released (commanded open)


TASKS: dict[str, TaskSpec] = {
    "reach": TaskSpec("reach", _sample_reach, lambda s: f"reach the {s.objects[s.target].name}", _reach_success, 60),
    "put_in_tray": TaskSpec(
        "put_in_tray",
        _sample_tray,
        lambda s: f"put the {s.objects[s.target].name} in the tray",
        _tray_success,
        120,
    ),
    "hover": TaskSpec(
        "hover", _sample_reach, lambda s: f"hover above the {s.objects[s.target].name}", _hover_success, 60
    ),
    "lift": TaskSpec("lift", _sample_reach, lambda s: "lift the gripper", _lift_success, 30),
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name; unknown names list the available ones."""
    if name not in TASKS:
        raise ValueError(f"task={name!r} is unknown; available tasks: {sorted(TASKS)}")
    return TASKS[name]
