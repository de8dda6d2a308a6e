"""TinyDiffusionPolicy: samplers against the numpy formulas, masks, windows, save/load, training."""

import json
import math

import numpy as np
import pytest
import torch

from policylens.models.diffusion import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPolicyConfig,
    MinMaxNormalizer,
    TinyDiffusionPolicy,
    make_betas,
    make_windows,
    train_diffusion_policy,
)

TINY = {
    "obs_dim": 5,
    "action_dim": 3,
    "horizon": 8,
    "n_obs_steps": 2,
    "n_action_steps": 4,
    "n_layer": 2,
    "n_head": 2,
    "n_emb": 16,
    "num_inference_steps": 10,
}


def _np_acp(n=100):
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])
    return betas, np.cumprod(1 - betas)


def test_betas_match_numpy():
    betas, _ = _np_acp()
    np.testing.assert_allclose(make_betas(100).numpy(), betas, rtol=1e-12)


@pytest.mark.parametrize("n_inf", [100, 10])
def test_ddpm_step_matches_formula(n_inf):
    _, acp = _np_acp()
    sched = DDPMScheduler(100)
    ts = sched.set_timesteps(n_inf)
    rng = np.random.default_rng(0)
    x, eps = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3)) * 3
    for t in (ts[0], ts[len(ts) // 2], 0):
        g = torch.Generator().manual_seed(1)
        got = sched.step(torch.tensor(eps), t, torch.tensor(x), generator=g).numpy()
        noise = torch.randn((2, 4, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
        prev = t - 100 // n_inf
        a_t, a_p = acp[t], (acp[prev] if prev >= 0 else 1.0)
        x0 = np.clip((x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), -1, 1)
        beta_t = 1 - a_t / a_p
        mean = np.sqrt(a_p) * beta_t / (1 - a_t) * x0 + np.sqrt(1 - beta_t) * (1 - a_p) / (1 - a_t) * x
        var = (1 - a_p) / (1 - a_t) * beta_t
        want = mean + (np.sqrt(var) * noise if t > 0 else 0.0)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_ddim_step_matches_formula():
    _, acp = _np_acp()
    sched = DDIMScheduler(100)
    assert sched.set_timesteps(10) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    rng = np.random.default_rng(1)
    x, eps = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    got = sched.step(torch.tensor(eps), 50, torch.tensor(x)).numpy()
    x0 = np.clip((x - np.sqrt(1 - acp[50]) * eps) / np.sqrt(acp[50]), -1, 1)
    want = np.sqrt(acp[40]) * x0 + np.sqrt(1 - acp[40]) * eps
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_add_noise_formula():
    _, acp = _np_acp()
    s = DDPMScheduler(100)
    x0, n = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    t = torch.tensor([0, 57])
    want = np.sqrt(acp[[0, 57]])[:, None] * x0.numpy() + np.sqrt(1 - acp[[0, 57]])[:, None] * n.numpy()
    np.testing.assert_allclose(s.add_noise(x0, n, t).numpy(), want, rtol=1e-12)


def test_normalizer_roundtrip_and_range():
    data = torch.tensor([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [1.0, 5.0, 2.0]])
    n = MinMaxNormalizer(3).fit(data)
    z = n.normalize(data)
    assert torch.allclose(z[:, 0], torch.tensor([-1.0, 1.0, 0.0]))
    assert torch.all(z[:, 1] == 0)  # constant dimension
    assert torch.allclose(n.unnormalize(z), data)


def test_causal_masks_block_future_actions():
    torch.manual_seed(0)
    p = TinyDiffusionPolicy(DiffusionPolicyConfig(**TINY)).eval()
    x, cond = torch.randn(1, 8, 3), torch.randn(1, 2, 5)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    with torch.no_grad():
        a, b = p.model(x, torch.tensor([3]), cond), p.model(x2, torch.tensor([3]), cond)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    # memory mask: action token 0 sees only the time token and obs token 0
    cond2 = cond.clone()
    cond2[:, 1] += 1.0
    with torch.no_grad():
        c = p.model(x, torch.tensor([3]), cond2)
    assert torch.allclose(a[:, 0], c[:, 0], atol=1e-6)
    assert not torch.allclose(a[:, 1:], c[:, 1:])


def test_predict_action_seeded_and_save_load(tmp_path):
    torch.manual_seed(0)
    p = TinyDiffusionPolicy(DiffusionPolicyConfig(**TINY, n_cond_layers=1)).eval()
    p.action_normalizer.fit(torch.randn(50, 3) * 4)
    obs = torch.randn(3, 2, 5)
    a = p.predict_action(obs, generator=torch.Generator().manual_seed(7))
    b = p.predict_action(obs, generator=torch.Generator().manual_seed(7))
    c = p.predict_action(obs, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 8, 3) and torch.equal(a, b) and not torch.equal(a, c)
    p.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["type"] == "tiny_diffusion_policy"
    q = TinyDiffusionPolicy.from_pretrained(tmp_path)
    assert torch.equal(q.predict_action(obs, generator=torch.Generator().manual_seed(7)), a)
    d = p.predict_action(obs, generator=torch.Generator().manual_seed(7), sampler="ddim", num_inference_steps=5)
    assert d.shape == a.shape and torch.isfinite(d).all()
    with pytest.raises(ValueError, match="n_obs_steps=2"):
        p.predict_action(torch.randn(3, 1, 5))


def test_config_validation():
    with pytest.raises(ValueError, match="n_emb=30 is not divisible"):
        DiffusionPolicyConfig(n_emb=30, n_head=4)
    with pytest.raises(ValueError, match="expected 'tiny_diffusion_policy'"):
        DiffusionPolicyConfig.from_dict({"type": "act"})


def test_make_windows_pads_edges():
    cfg = DiffusionPolicyConfig(**TINY)
    T = 10
    ep = {"obs": np.arange(T * 5, dtype=np.float32).reshape(T, 5), "action": np.arange(T * 3).reshape(T, 3)}
    obs, act = make_windows([ep], cfg)
    # one window per step: every step is the current (last) observation exactly once
    assert obs.shape == (T, 2, 5) and act.shape == (T, 8, 3)
    np.testing.assert_array_equal(obs[:, -1, 0], np.arange(T) * 5)
    assert np.array_equal(act[0, :, 0], [0, 0, 3, 6, 9, 12, 15, 18])  # first step repeated
    assert np.array_equal(act[-1, :, 0], [24, 27, 27, 27, 27, 27, 27, 27])  # last step repeated
    short, _ = make_windows([{"obs": ep["obs"][:2], "action": ep["action"][:2]}], cfg)
    assert len(short) == 2  # an episode shorter than the horizon still trains
    with pytest.raises(ValueError, match=r"episodes\[0\]\['obs'\]"):
        make_windows([{"obs": np.zeros((4, 2)), "action": np.zeros((4, 3))}], cfg)


def test_training_returns_eval_policy_and_logs(tmp_path):
    rng = np.random.default_rng(0)
    eps = []
    for _ in range(4):
        t = np.linspace(0, 1, 20)[:, None]
        goal = rng.uniform(-1, 1, size=(1, 3))
        eps.append({"obs": np.concatenate([t * goal, np.repeat(goal, 20, 0)[:, :2]], 1), "action": t * goal})
    cfg = DiffusionPolicyConfig(**TINY)
    p = train_diffusion_policy(eps, cfg, steps=30, batch_size=16, log_dir=tmp_path, progress=False)
    assert not p.training
    assert any(f.name.startswith("events.out.tfevents") for f in tmp_path.iterdir())
    out = p.predict_action(torch.tensor(eps[0]["obs"][:2][None], dtype=torch.float32))
    assert out.shape == (1, 8, 3) and torch.isfinite(out).all()
    assert not math.isnan(float(p.action_normalizer.scale.sum()))
