"""SimEnv: determinism, calibration against segmentation, experts, state layout, input checks."""

import numpy as np
import pytest

from policylens.sim.pybullet import STATE_DIM, SimEnv, expert_action, get_task, project


def _rollout(seed, steps=5):
    with SimEnv("reach", seed=0, image_size=64) as env:
        obs = [env.reset(seed=seed)]
        for _ in range(steps):
            obs.append(env.step(expert_action(env))[0])
    return obs


def test_scene_is_deterministic_under_a_seed():
    a, b = _rollout(7), _rollout(7)
    for oa, ob in zip(a, b, strict=True):
        np.testing.assert_array_equal(oa["state"], ob["state"])
        np.testing.assert_array_equal(oa["images"]["hand_camera"], ob["images"]["hand_camera"])
    assert a[0]["instruction"] == b[0]["instruction"]
    c = _rollout(8, steps=0)
    assert not np.array_equal(a[0]["state"], c[0]["state"])


@pytest.mark.parametrize("task", ["reach", "put_in_tray"])
def test_projected_object_centres_land_on_their_mask(task):
    with SimEnv(task, seed=0, image_size=64) as env:
        hand_hits = 0
        for seed in (1, 2):
            obs = env.reset(seed=seed)
            for _ in range(3):
                obs, _, _ = env.step(expert_action(env))
            cal = env.calibration()
            centres = env.scene.object_positions()
            for cam in env.cameras:
                uv, z = project(centres, cal[cam]["intrinsics"], cal[cam]["extrinsics"])
                seg = obs["segmentation"][cam]
                for i, ((u, v), depth) in enumerate(zip(uv, z, strict=True)):
                    ui, vi = round(u), round(v)
                    if depth > 0 and 0 <= ui < 64 and 0 <= vi < 64:
                        # the wrist camera may see an object through the fingers (label 2 = robot)
                        ok = (10 + i,) if cam != "hand_camera" else (10 + i, 2)
                        assert seg[vi, ui] in ok, (cam, i, seg[vi, ui])
                        hand_hits += cam == "hand_camera" and seg[vi, ui] == 10 + i
                    else:
                        assert cam == "hand_camera", f"{cam} must see every object"
        assert hand_hits >= 1


def test_calibration_forms_agree():
    from policylens.data._geometry import pose_from_6d

    with SimEnv("reach", image_size=64, render=False) as env:
        env.reset(seed=0)
        for cam, c in env.calibration().items():
            np.testing.assert_allclose(pose_from_6d(c["extrinsics_6d"]), c["extrinsics"], atol=1e-9)
            R = c["extrinsics"][:3, :3]
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
            assert c["intrinsics"][0, 2] == pytest.approx(31.5), cam


@pytest.mark.parametrize(
    ("task", "seeds"), [("reach", range(4)), ("put_in_tray", range(3)), ("hover", range(4)), ("lift", range(3))]
)
def test_expert_succeeds(task, seeds):
    with SimEnv(task, image_size=64, render=False) as env:
        for seed in seeds:
            env.reset(seed=seed)
            info = {"success": False}
            for _ in range(env.task.max_steps):
                _, done, info = env.step(expert_action(env))
                if done:
                    break
            assert info["success"], (task, seed, env.instruction)


def test_state_layout_encodes_target():
    with SimEnv("reach", image_size=64, render=False) as env:
        obs = env.reset(seed=3)
        s = obs["state"]
        assert s.shape == (STATE_DIM,) and s.dtype == np.float32
        np.testing.assert_allclose(s[:7], obs["proprio"])
        onehot = s[22:27]
        assert onehot.sum() == 1 and int(onehot.argmax()) == env.scene_spec.target
        pos = env.scene.object_positions()
        np.testing.assert_allclose(s[7 : 7 + pos.size], pos.reshape(-1), atol=1e-6)
        np.testing.assert_allclose(s[27:30], pos[env.scene_spec.target], atol=1e-6)
        assert STATE_DIM == 33 and not s[30:].any()  # no tray in reach
        assert env.scene_spec.objects[env.scene_spec.target].name in obs["instruction"]
        assert "images" not in obs


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="task='fly'"):
        get_task("fly")
    with pytest.raises(ValueError, match="cameras"):
        SimEnv("reach", cameras=("top",))
    with SimEnv("reach", image_size=64, render=False) as env:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"\(7,\)"):
            env.step(np.zeros(6))


@pytest.mark.parametrize("task", ["reach", "put_in_tray"])
def test_gripper_starts_at_the_sampled_point_pointing_down(task):
    from policylens.sim.pybullet._tasks import START_REGION

    with SimEnv(task, image_size=64, render=False) as env:
        starts = []
        for seed in range(4):
            obs = env.reset(seed=seed)
            start = np.asarray(env.scene_spec.start_ee)
            for (lo, hi), value in zip(START_REGION, start, strict=True):
                assert lo <= value <= hi
            np.testing.assert_allclose(obs["proprio"][:3], start, atol=2e-3)
            np.testing.assert_allclose(obs["proprio"][3:6], 0.0, atol=1e-2)  # top-down
            starts.append(start)
        assert len({tuple(s.round(4)) for s in starts}) == 4  # the start changes with the layout


def test_hover_shares_reach_layouts_and_its_goal_is_higher():
    from policylens.sim.pybullet._tasks import HOVER_HEIGHT, REACH_CLEARANCE, REACH_TOLERANCE

    with SimEnv("reach", image_size=64, render=False) as reach, SimEnv("hover", image_size=64, render=False) as hover:
        for seed in range(3):
            reach.reset(seed=seed)
            hover.reset(seed=seed)
            assert reach.scene_spec == hover.scene_spec
            assert hover.instruction == reach.instruction.replace("reach the", "hover above the")
            for _ in range(hover.task.max_steps):  # the hover expert's end point fails reach's detector
                _, done, info = hover.step(expert_action(hover))
                if done:
                    break
            assert info["success"] and not reach.task.success(hover)
    assert HOVER_HEIGHT - REACH_CLEARANCE > 2 * REACH_TOLERANCE


def test_lift_goes_straight_up_from_the_start_point():
    from policylens.sim.pybullet._tasks import LIFT_HEIGHT, REACH_TOLERANCE

    with SimEnv("lift", image_size=64, render=False) as env:
        env.reset(seed=5)
        start = np.asarray(env.scene_spec.start_ee)
        assert env.instruction == "lift the gripper" and not env.task.success(env)
        done = False
        while not done:
            _, done, info = env.step(expert_action(env))
        ee = env.ee_position()
        assert info["success"] and np.linalg.norm(ee - start - [0, 0, LIFT_HEIGHT]) < REACH_TOLERANCE
        assert abs(ee[0] - start[0]) < 0.02 and abs(ee[1] - start[1]) < 0.02  # straight up
