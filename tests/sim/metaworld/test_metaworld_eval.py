"""The batched evaluator against a plain sequential loop, masking of finished environments, and
the diffusion policy adapter (one predict call per control step for the slots that need a chunk)."""

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld")

from policylens._intervals import EvalResult
from policylens.models.diffusion import TinyDiffusionPolicy, metaworld_config
from policylens.sim import diffusion_agent
from policylens.sim.metaworld import (
    MetaWorldEnv,
    MetaWorldExpert,
    eval_layout_seed,
    evaluate_metaworld,
    results_table,
)


def _sequential(policy, task, episodes, seed, max_steps):
    """The reference: one environment, one episode after the other, one observation per call."""
    success, length = [], []
    with MetaWorldEnv(task, max_steps=max_steps) as env:
        for i in range(episodes):
            obs, done = env.reset(eval_layout_seed(seed, i)), False
            while not done:
                obs, done, info = env.step(policy.act(obs["state"][None], np.array([0]))[0])
            success.append(info["success"])
            length.append(info["t"])
    return success, length


def test_batched_expert_equals_the_sequential_loop():
    task = "pick-place-v3"
    expert = MetaWorldExpert(task)
    ref_success, ref_length = _sequential(expert, task, 3, seed=1, max_steps=120)
    batched = evaluate_metaworld(expert, task, episodes=3, seed=1, batch=2, max_steps=120, progress=False)
    assert batched.episode_success == ref_success and batched.episode_length == ref_length
    assert batched.successes == sum(ref_success) == 3  # the expert solves pick-place
    assert len(set(ref_length)) > 1  # three layouts, three episode lengths
    assert batched.interval == pytest.approx((0.439, 1.0), abs=1e-3)


class _Recorder:
    """Moves straight up (never succeeds on reach); records every call's slots and every reset."""

    def __init__(self):
        self.calls, self.resets = [], []

    def reset(self, slots):
        self.resets.append(sorted(np.asarray(slots).tolist()))

    def act(self, states, slots):
        self.calls.append(np.asarray(slots).tolist())
        assert states.shape == (len(slots), 39)
        return np.tile([0.0, 0.0, 1.0, 0.0], (len(slots), 1))


def test_finished_environments_are_masked_out_and_refilled():
    policy = _Recorder()
    res = evaluate_metaworld(policy, "reach-v3", episodes=5, batch=2, max_steps=4, progress=False)
    assert res.successes == 0 and res.episode_length == [4] * 5
    # two slots for 2 waves of 4 steps, then the fifth episode alone in slot 0: one call per step
    assert policy.calls == [[0, 1]] * 8 + [[0]] * 4
    assert policy.resets == [[0, 1], [0, 1], [0]]


class _FinishFirst:
    """Slot 0 is driven by the expert (it succeeds), the others hold still until max_steps."""

    def __init__(self):
        self.expert, self.rows = MetaWorldExpert("reach-v3"), []

    def act(self, states, slots):
        self.rows.append(len(slots))
        out = np.zeros((len(slots), 4), dtype=np.float32)
        out[np.asarray(slots) == 0] = self.expert.act(states[np.asarray(slots) == 0])
        return out


def test_a_finished_episode_is_not_stepped_again():
    policy = _FinishFirst()
    res = evaluate_metaworld(policy, "reach-v3", episodes=2, batch=2, max_steps=80, progress=False)
    assert res.episode_success == [True, False]
    first = res.episode_length[0]
    assert res.episode_length[1] == 80 and first < 80
    assert policy.rows == [2] * first + [1] * (80 - first)


def _tiny_policy(**overrides):
    torch.manual_seed(0)
    return TinyDiffusionPolicy(metaworld_config("reach-v3", n_emb=16, n_layer=1, num_inference_steps=2, **overrides))


def test_diffusion_adapter_calls_the_policy_once_per_chunk():
    policy = _tiny_policy().eval()
    calls = []
    original = policy.predict_action

    def counting(obs, **kw):
        calls.append(obs.shape[0])
        return original(obs, **kw)

    policy.predict_action = counting
    agent = diffusion_agent(policy, seed=0, n_action_steps=4)
    res = evaluate_metaworld(agent, "reach-v3", episodes=2, batch=2, max_steps=9, progress=False)
    assert res.episode_length == [9, 9]
    assert calls == [2, 2, 2]  # steps 0, 4, 8: both slots in one call each time
    with pytest.raises(ValueError, match=r"states has shape \(1, 7\); expected \(1, obs_dim=39\)"):
        agent.act(np.zeros((1, 7)), [0])
    with pytest.raises(ValueError, match=r"n_action_steps=8: expected 1\.\.7 \(horizon 8 - n_obs_steps 2 \+ 1\)"):
        diffusion_agent(policy, n_action_steps=8)


def test_results_table_lists_each_task_and_the_mean():
    a, b = EvalResult(2, 2, [True, True], [50, 60]), EvalResult(1, 2, [True, False], [70, 500])
    text = results_table({"reach-v3": a, "push-v3": b}, {"reach-v3": 1.5, "push-v3": 2.0})
    assert "2/2  100.0%  [34.2%, 100.0%]" in text and "285.0" in text
    assert text.splitlines()[-1].startswith("mean of 2 tasks") and text.splitlines()[-1].endswith("75.0%")
