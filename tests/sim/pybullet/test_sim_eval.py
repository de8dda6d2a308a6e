"""Closed-loop evaluation, ChunkedPolicy, Wilson interval and in-memory training episodes."""

import numpy as np
import pytest

from policylens.sim.pybullet import (
    STATE_DIM,
    ChunkedPolicy,
    ExpertPolicy,
    evaluate_policy,
    make_training_episodes,
    wilson_interval,
)


def test_wilson_interval_reference_values():
    lo, hi = wilson_interval(8, 10)  # textbook value: [0.490, 0.943]
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def test_expert_policy_evaluates_to_full_success():
    res = evaluate_policy(ExpertPolicy(), "reach", episodes=3, render=False, progress=False)
    assert res.n == 3 and res.successes == 3 and res.success_rate == 1.0
    assert "3/3" in str(res)


class _Hold:
    """Chunk predictor that stays still: never reaches the target."""

    def __init__(self):
        self.calls = 0

    def predict_chunk(self, obs):
        self.calls += 1
        return np.tile(obs["proprio"][None], (8, 1))


def test_chunked_policy_replans_every_k_steps():
    inner = _Hold()
    res = evaluate_policy(ChunkedPolicy(inner, k=4), "reach", episodes=1, render=False, progress=False, max_steps=12)
    assert res.successes == 0 and res.episode_length == [12]
    assert inner.calls == 3
    with pytest.raises(ValueError, match=r"\(horizon, 7\)"):
        ChunkedPolicy(lambda obs: np.zeros(7)).act({})


def test_training_episodes_are_deterministic_and_shaped():
    a = make_training_episodes("reach", 2, seed=1, progress=False)
    b = make_training_episodes("reach", 2, seed=1, progress=False)
    for ea, eb in zip(a, b, strict=True):
        assert ea["obs"].shape == (len(ea["action"]), STATE_DIM) and ea["action"].shape[1] == 7
        np.testing.assert_array_equal(ea["action"], eb["action"])
        assert ea["success"] and ea["instruction"].startswith("reach the")
    imgs = make_training_episodes(
        "reach", 1, seed=1, render=True, image_size=32, cameras=("hand_camera",), render_stride=3, progress=False
    )[0]
    assert imgs["images"]["hand_camera"].shape[1:] == (32, 32, 3)
    assert list(imgs["image_steps"]) == list(range(0, len(imgs["action"]), 3))


def test_action_noise_perturbs_execution_but_not_labels():
    from policylens.sim.pybullet import SimEnv, expert_action
    from policylens.sim.pybullet._record import record_episode

    clean = make_training_episodes("reach", 1, seed=3, progress=False)[0]
    noisy = make_training_episodes("reach", 1, seed=3, progress=False, action_noise=0.02)[0]
    again = make_training_episodes("reach", 1, seed=3, progress=False, action_noise=0.02)[0]
    np.testing.assert_array_equal(noisy["obs"], again["obs"])  # seeded noise
    np.testing.assert_array_equal(clean["obs"][0], noisy["obs"][0])  # same layout and start
    assert not np.allclose(clean["obs"][2, :3], noisy["obs"][2, :3], atol=1e-3)  # execution drifted
    # every recorded action is the clean expert's answer in the state it was recorded from
    with SimEnv("reach", render=False) as env:
        env.reset(seed=300_000)
        assert np.array_equal(env.state(), noisy["obs"][0])
        np.testing.assert_allclose(noisy["action"][0], expert_action(env), atol=1e-6)
        rng = np.random.default_rng([300_000, 7])
        env.step(noisy["action"][0] + np.r_[rng.normal(0.0, 0.02, 3), np.zeros(4)].astype(np.float32))
        np.testing.assert_allclose(env.state(), noisy["obs"][1], atol=1e-5)
        np.testing.assert_allclose(noisy["action"][1], expert_action(env), atol=1e-5)
    with SimEnv("reach", render=False) as env, pytest.raises(ValueError, match="action_noise"):
        record_episode(env, 0, action_noise=-1.0)
