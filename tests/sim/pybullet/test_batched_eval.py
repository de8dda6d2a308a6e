"""The batched pybullet evaluator: many environments stepped together, one policy call per control
step; episode i runs on the same layout and draws the same noise whatever its slot, so outcomes
equal the one-environment loop; a VLA's batched chunks equal its one-at-a-time chunks."""

import numpy as np
import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy
from policylens.sim import ChunkedPolicy, VLAChunks, diffusion_agent, vla_agent
from policylens.sim.pybullet import ExpertPolicy, SimEnv, evaluate_policy


def _same(a, b):
    assert a.episode_success == b.episode_success and a.episode_length == b.episode_length


def test_the_expert_gives_the_same_episodes_at_every_batch_size():
    one = evaluate_policy(ExpertPolicy(), "put_in_tray", episodes=4, render=False, progress=False, max_steps=40)
    three = evaluate_policy(ExpertPolicy(), "put_in_tray", 4, render=False, progress=False, max_steps=40, batch=3)
    _same(one, three)
    assert len(set(one.episode_length)) > 1  # different layouts, different lengths: the order is checked


def test_layouts_run_the_named_seeds_and_targets_at_every_batch_size():
    from policylens.sim.pybullet import expert_action

    plan = [(7, 0), (7, 1), (11, None), (3, 2)]
    kw = {"render": False, "progress": False}
    one = evaluate_policy(ExpertPolicy(), "reach", layouts=plan, **kw)
    two = evaluate_policy(ExpertPolicy(), "reach", layouts=plan, batch=2, **kw)
    _same(one, two)
    lengths = []
    with SimEnv("reach", image_size=64, render=False) as env:  # by hand: each layout and target in turn
        for seed, target in plan:
            env.reset(seed=seed, target=target)
            done, steps = False, 0
            while not done and steps < env.task.max_steps:
                _, done, _ = env.step(expert_action(env))
                steps += 1
            lengths.append(steps)
    assert one.n == 4 and one.episode_length == lengths
    assert one.episode_length[0] != one.episode_length[1]  # another target of the same layout


def test_a_diffusion_agent_with_episode_noise_gives_the_same_episodes_batched():
    torch.manual_seed(0)
    cfg = DiffusionPolicyConfig(obs_dim=33, action_dim=7, n_layer=1, n_emb=16, num_inference_steps=2)
    policy = TinyDiffusionPolicy(cfg).eval()
    kw = {"render": False, "progress": False, "max_steps": 10}
    agent = diffusion_agent  # a fresh agent per run: its slots start empty
    runs = [evaluate_policy(agent(policy, seed=5, noise="episode"), "reach", 3, **kw, batch=b) for b in (1, 2, 3)]
    _same(runs[0], runs[1])
    _same(runs[0], runs[2])


class _Calls:
    """A chunk predictor that counts calls and batch sizes: stays where it is."""

    def __init__(self):
        self.sizes = []

    def predict_batch(self, windows, slots):
        self.sizes.append(len(slots))
        return np.stack([np.tile(w[-1]["proprio"], (4, 1)) for w in windows])


def test_one_call_per_control_step_for_every_running_environment():
    inner = _Calls()
    res = evaluate_policy(ChunkedPolicy(inner, k=2), "reach", 3, render=False, progress=False, max_steps=4, batch=2)
    assert res.episode_length == [4, 4, 4]
    assert inner.sizes == [2, 2, 1, 1]  # steps 0, 2 of slots 0-1; then episode 2 alone (steps 0, 2)


def test_vla_chunks_batched_equal_one_at_a_time():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    with SimEnv("reach", seed=0, image_size=28, cameras=model.config.cameras) as env:
        observations = [env.reset(seed=s) for s in (1, 2)]
    both = VLAChunks(model, seed=3)
    both.reset([0, 1], episodes=[7, 8])
    together = both.predict_batch([[o] for o in observations], [0, 1])
    for i, obs in enumerate(observations):
        alone = VLAChunks(model, seed=3)
        alone.reset([0], episodes=[7 + i])
        np.testing.assert_allclose(together[i], alone.predict_batch([[obs]], [0])[0], rtol=1e-4, atol=1e-5)
    agent = vla_agent(model, seed=3)
    assert agent.k == model.config.chunk_size // 2 and agent.image_size == 28


def test_a_predictor_that_reads_its_environment_runs_one_environment():
    class Bound:
        def bind(self, env):
            pass

        def __call__(self, obs):
            return np.zeros((4, 7))

    with pytest.raises(ValueError, match="batch=2: a ChunkedPolicy drives one environment"):
        evaluate_policy(ChunkedPolicy(Bound()), "reach", 2, render=False, progress=False, batch=2)
    with pytest.raises(ValueError, match="batch=0"):
        evaluate_policy(ExpertPolicy(), "reach", 2, render=False, progress=False, batch=0)
