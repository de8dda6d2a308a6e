"""One layout, each object named in turn: the scene stays, the instruction and the goal change."""

import numpy as np
import pytest

from policylens.sim.pybullet import SimEnv, make_training_episodes


def test_reset_with_target_keeps_the_layout_and_names_another_object():
    with SimEnv("reach", render=False) as env:
        env.reset(seed=11)
        own = env.scene_spec
        positions = env.scene.object_positions().copy()
        other = (own.target + 1) % len(own.objects)
        env.reset(seed=11, target=other)
        assert env.scene_spec.target == other
        assert env.scene_spec.objects == own.objects and env.scene_spec.start_ee == own.start_ee
        np.testing.assert_allclose(env.scene.object_positions(), positions, atol=1e-6)
        assert env.instruction == f"reach the {own.objects[other].name}"
        with pytest.raises(ValueError, match=f"layout seed 11 has {len(own.objects)} objects"):
            env.reset(seed=11, target=len(own.objects))


def test_every_target_names_each_object_of_a_layout_once_and_the_expert_reaches_it():
    eps = make_training_episodes("reach", 6, seed=0, every_target=True, progress=False)
    with SimEnv("reach", render=False) as env:
        env.reset(seed=0)  # layout 0 of run seed 0
        names = [o.name for o in env.scene_spec.objects]
    assert len(eps) == 6
    first = [e["instruction"] for e in eps[: len(names)]]
    assert first == [f"reach the {n}" for n in names]
    assert all(e["success"] for e in eps)
    starts = {tuple(np.round(e["proprio"][0], 5)) for e in eps[: len(names)]}
    assert len(starts) == 1  # one start pose: only the words differ within a layout
    ends = [e["proprio"][-1][:3] for e in eps[: len(names)]]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(ends) for b in ends[i + 1 :]) > 0.02
