"""MetaWorldEnv: observations, seeded layouts, task names and experts, rendering with calibration."""

import numpy as np
import pytest

pytest.importorskip("metaworld")

from policylens.sim.metaworld import (
    ACTION_DIM,
    STATE_DIM,
    MetaWorldEnv,
    MetaWorldExpert,
    RenderingUnavailable,
    _render,
    check_task,
    eval_layout_seed,
    expert_class,
    expert_class_name,
    list_tasks,
    train_layout_seed,
)


def test_observation_and_step(pick_place_env):
    obs = pick_place_env.reset(3)
    assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
    assert obs["instruction"] == "pick place" and "images" not in obs
    np.testing.assert_allclose(obs["state"][36:39], pick_place_env.layout()["goal"], atol=1e-6)  # goal observed
    obs, done, info = pick_place_env.step(np.zeros(ACTION_DIM))
    assert not done and info == {"success": False, "t": 1, "reward": info["reward"]}
    with pytest.raises(ValueError, match=r"action has shape \(7,\); expected \(4,\)"):
        pick_place_env.step(np.zeros(7))


def test_the_seed_alone_decides_the_layout(pick_place_env):
    a = pick_place_env.reset(11)["state"]
    pick_place_env.reset(12)
    b = pick_place_env.reset(11)["state"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, pick_place_env.reset(12)["state"])  # another seed, another layout
    with MetaWorldEnv("pick-place-v3") as other:  # another process or env: the same layout
        np.testing.assert_array_equal(other.reset(11)["state"], a)
    assert train_layout_seed(0, 99_999) < eval_layout_seed(0, 0)


def test_task_names_and_experts():
    tasks = list_tasks()
    assert len(tasks) == 50 and "pick-place-v3" in tasks
    with pytest.raises(ValueError, match=r"task='pick-place'.*Did you mean pick-place-v3.*Known tasks: assembly-v3"):
        check_task("pick-place")
    assert expert_class_name("pick-place-v3") == "SawyerPickPlaceV3Policy"
    assert expert_class_name("peg-insert-side-v3") == "SawyerPegInsertionSideV3Policy"  # metaworld's naming quirk
    for task in tasks:  # every task has its expert, found by table or by name
        assert expert_class(task).__name__.startswith("Sawyer")


def test_expert_solves_pick_place(pick_place_env):
    expert = MetaWorldExpert("pick-place-v3")
    obs, done, steps = pick_place_env.reset(train_layout_seed(0, 0)), False, 0
    while not done:
        obs, done, info = pick_place_env.step(expert.act(obs["state"][None])[0])
        steps += 1
    assert info["success"] and steps < 100


def test_max_steps_is_checked():
    with pytest.raises(ValueError, match=r"max_steps=501: expected 1\.\.500"):
        MetaWorldEnv("reach-v3", max_steps=501)


def test_missing_osmesa_names_the_fix(monkeypatch):
    monkeypatch.setattr(_render, "_find_osmesa", lambda: None)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(RenderingUnavailable, match=r"apt-get install libosmesa6.*MUJOCO_GL=osmesa"):
        MetaWorldEnv("reach-v3", cameras=("corner",))


@pytest.mark.skipif(_render._find_osmesa() is None, reason="rendering needs libosmesa6 (apt-get install libosmesa6)")
def test_rendered_cameras_and_their_calibration():
    with MetaWorldEnv("pick-place-v3", cameras=("corner", "gripperPOV"), image_size=64, max_steps=3) as env:
        obs = env.reset(5)
        assert {c: im.shape for c, im in obs["images"].items()} == {"corner": (64, 64, 3), "gripperPOV": (64, 64, 3)}
        assert all(im.std() > 0 for im in obs["images"].values())
        cal = env.calibration()["corner"]
        p = np.linalg.inv(cal["extrinsics"]) @ np.r_[obs["state"][4:7], 1.0]  # the puck's centre, OpenCV camera frame
        u, v = (cal["intrinsics"] @ (p[:3] / p[2]))[:2]
        r = env.rig.renderer  # MuJoCo's own depth at that pixel: the puck's top, just in front of its centre
        r.enable_depth_rendering()
        r.update_scene(env.raw.data, camera="corner")
        depth = r.render()[round(v), round(u)]
        r.disable_depth_rendering()
        assert 0 < p[2] - depth < 0.05, (p[2], depth)
        wrist = env.calibration()["gripperPOV"]["extrinsics"]
        env.step(np.array([1.0, 0.0, 0.0, 0.0]))
        assert not np.allclose(env.calibration()["gripperPOV"]["extrinsics"], wrist)  # the wrist camera moves
        np.testing.assert_allclose(env.calibration()["corner"]["extrinsics"], cal["extrinsics"])
    with pytest.raises(ValueError, match=r"not cameras of this MetaWorld scene; known: \['topview'"):
        MetaWorldEnv("reach-v3", cameras=("nope",))
