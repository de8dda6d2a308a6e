"""The one simulator agent (history + chunk queue, one or many environments) and ``load_agent``,
checked against plain loops written here from the definition: a deque of the last ``n_obs_steps``
states (the first repeated), a chunk every ``k`` steps from index ``n_obs_steps - 1``."""

import json
from collections import deque

import numpy as np
import pytest
import torch

from policylens.models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy, metaworld_config
from policylens.sim import ChunkedPolicy, diffusion_agent, load_agent
from policylens.sim.pybullet import CAMERAS, ExpertPolicy, render_settings

CONFIG = {"obs_dim": 5, "action_dim": 3, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 3, "n_layer": 1}


def _policy(**overrides):
    torch.manual_seed(0)
    cfg = DiffusionPolicyConfig(**{**CONFIG, "n_emb": 16, "num_inference_steps": 3, **overrides})
    return TinyDiffusionPolicy(cfg).eval()


def _states(n_steps, n_envs, seed=0):
    return np.random.default_rng(seed).standard_normal((n_steps, n_envs, CONFIG["obs_dim"])).astype(np.float32)


def _reference_episode_noise(policy, states, seed):
    """One environment, noise reseeded per episode: the plain loop of the definition."""
    c = policy.config
    history, queue, out = deque(maxlen=c.n_obs_steps), [], []
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 0)  # episode 0
    for x in states:
        history.extend([x] * c.n_obs_steps) if not history else history.append(x)
        if not queue:
            chunk = policy.predict_action(torch.from_numpy(np.stack(history))[None], generator=gen)[0].numpy()
            queue = list(chunk[c.n_obs_steps - 1 : c.n_obs_steps - 1 + c.n_action_steps])
        out.append(queue.pop(0))
    return np.stack(out)


def test_one_environment_with_episode_noise_matches_the_plain_loop():
    policy, states = _policy(), _states(7, 1)[:, 0]
    agent = diffusion_agent(policy, seed=3, noise="episode")
    agent.reset()
    got = np.stack([agent.act({"state": x}) for x in states])
    np.testing.assert_array_equal(got, _reference_episode_noise(policy, states, seed=3))
    assert agent.calls == 3  # steps 0, 3, 6


def test_a_batch_with_run_noise_matches_one_call_per_step_over_the_slots():
    policy, states = _policy(), _states(4, 2)
    agent = diffusion_agent(policy, seed=1, noise="run")
    agent.reset([0, 1])
    got = np.stack([agent.act(s, [0, 1]) for s in states])  # (T, 2, A)
    gen, c = torch.Generator().manual_seed(1), policy.config
    hist = [deque([states[0, i]] * 2, maxlen=2) for i in range(2)]
    want = []
    for t, s in enumerate(states):
        if t:
            for i in range(2):
                hist[i].append(s[i])
        if t % c.n_action_steps == 0:
            x = torch.from_numpy(np.stack([np.stack(h) for h in hist]))
            chunk = policy.predict_action(x, generator=gen).numpy()[:, 1 : 1 + c.n_action_steps]
        want.append(chunk[:, t % c.n_action_steps])
    np.testing.assert_array_equal(got, np.stack(want))
    assert agent.calls == 2


def test_episode_noise_gives_each_environment_its_own_episode_whatever_the_batch():
    policy, states = _policy(), _states(5, 2)
    batched = diffusion_agent(policy, seed=2, noise="episode")
    batched.reset([0, 1])
    both = np.stack([batched.act(s, [0, 1]) for s in states])
    alone = diffusion_agent(policy, seed=2, noise="episode")
    alone.reset()
    np.testing.assert_array_equal(both[:, 0], np.stack([alone.act(x) for x in states[:, 0]]))


def test_slots_refill_independently_and_reset_clears_one_slot():
    calls = []

    def predict(obs):
        calls.append(float(obs[0]))
        return np.tile(np.asarray(obs, np.float32)[:1], (4, 7))  # (4, 7): the observation's first entry

    agent = ChunkedPolicy(predict, k=2)
    a = agent.act(np.array([[1.0], [2.0]]), [0, 1])
    assert a.shape == (2, 7) and calls == [1.0, 2.0] and agent.calls == 1
    agent.reset([1])
    b = agent.act(np.array([[5.0], [6.0]]), [0, 1])  # slot 0 runs its queue, slot 1 predicts again
    assert b[0, 0] == 1.0 and b[1, 0] == 6.0 and calls == [1.0, 2.0, 6.0]
    with pytest.raises(ValueError, match="2 observations for 1 slots"):
        agent.act(np.zeros((2, 1)), [0])


def test_bad_chunks_and_settings_are_refused():
    with pytest.raises(ValueError, match=r"\(horizon, 7\) chunk, got shape \(7,\)"):
        ChunkedPolicy(lambda obs: np.zeros(7)).act({})
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        ChunkedPolicy(lambda obs: None, k=0)
    with pytest.raises(ValueError, match=r"n_action_steps=8: expected 1\.\.7"):
        diffusion_agent(_policy(), n_action_steps=8)
    with pytest.raises(ValueError, match=r"noise='mixed': choose from \('episode', 'run'\)"):
        diffusion_agent(_policy(), noise="mixed")


def test_load_agent_on_pybullet(tmp_path):
    assert isinstance(load_agent("expert"), ExpertPolicy)
    assert render_settings(load_agent("expert"), 96) == {"image_size": 96, "cameras": CAMERAS, "render": False}
    cfg = DiffusionPolicyConfig(**{**CONFIG, "obs_dim": 33, "action_dim": 7, "n_emb": 16})
    TinyDiffusionPolicy(cfg).save_pretrained(tmp_path / "reach")
    agent = load_agent(str(tmp_path / "reach"), "pybullet", "reach", seed=4)
    assert isinstance(agent, ChunkedPolicy) and agent.k == 3 and agent.start == 1 and agent.inner.noise == "episode"
    assert render_settings(agent, 64) == {"image_size": 64, "cameras": CAMERAS, "render": True}
    with pytest.raises(ValueError, match="suite='gym': choose from"):
        load_agent("expert", "gym")


def test_load_agent_on_metaworld_checks_the_task(tmp_path):
    TinyDiffusionPolicy(metaworld_config("push-v3", n_emb=16, n_layer=1)).save_pretrained(tmp_path / "push-v3")
    agent = load_agent(str(tmp_path), "metaworld", "push-v3")  # a directory of per-task runs
    assert agent.inner.noise == "run" and agent.k == 4 and agent.action_dim == 4
    with pytest.raises(ValueError, match="trained on MetaWorld task 'push-v3'"):
        load_agent(str(tmp_path / "push-v3"), "metaworld", "reach-v3")
    with pytest.raises(ValueError, match="MetaWorld agents are per task"):
        load_agent("expert", "metaworld")
    assert json.loads((tmp_path / "push-v3" / "config.json").read_text())["task"] == "push-v3"
