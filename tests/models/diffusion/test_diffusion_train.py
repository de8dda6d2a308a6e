"""train_diffusion_policy: the step seam keeps the plain loop's result, out_dir makes runs resumable."""

import copy
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from policylens.models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy, make_windows, train_diffusion_policy
from policylens.models.diffusion._train import diffusion_step
from policylens.runs import TrainingInterrupted, load_train_state

CFG = DiffusionPolicyConfig(obs_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, n_layer=1, n_emb=16)
KW = {"batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "seed": 0, "progress": False}


def episodes(n=3, t=12):
    rng = np.random.default_rng(0)
    return [{"obs": rng.normal(size=(t, 3)), "action": rng.normal(size=(t, 2))} for _ in range(n)]


def plain_training(eps, steps):
    """The loop as it was written before the step seam: one function, inline loss, EMA by hand."""
    torch.manual_seed(KW["seed"])
    obs_np, act_np = make_windows(eps, CFG)
    policy = TinyDiffusionPolicy(CFG)
    policy.obs_normalizer.fit(torch.from_numpy(obs_np))
    policy.action_normalizer.fit(torch.from_numpy(act_np))
    obs = policy.obs_normalizer.normalize(torch.from_numpy(obs_np))
    act = policy.action_normalizer.normalize(torch.from_numpy(act_np))
    policy.train()
    ema = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=KW["lr"], weight_decay=1e-3, betas=(0.9, 0.95))
    w = KW["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: (i + 1) / w if i < w else 0.5 * (1 + math.cos(math.pi * (i - w) / max(1, steps - w)))
    )
    gen = torch.Generator().manual_seed(KW["seed"])
    for i in range(steps):
        idx = torch.randint(0, len(obs), (KW["batch_size"],), generator=gen)
        x0, cond = act[idx], obs[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, CFG.num_train_timesteps, (KW["batch_size"],), generator=gen)
        loss = F.mse_loss(policy.model(policy.ddpm.add_noise(x0, noise, t), t, cond), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        decay = min(0.9999, max(0.0, 1 - (1 + i) ** -0.75))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), policy.parameters(), strict=True):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            for e, b in zip(ema.buffers(), policy.buffers(), strict=True):
                e.copy_(b)
    return ema


def test_seam_reproduces_the_plain_loop(tmp_path):
    ours = train_diffusion_policy(episodes(), CFG, steps=5, **KW)
    reference = plain_training(episodes(), 5)
    torch.testing.assert_close(ours.state_dict(), reference.state_dict(), atol=0, rtol=0)
    resumable = train_diffusion_policy(episodes(), CFG, steps=5, out_dir=tmp_path, **KW)  # saving changes nothing
    torch.testing.assert_close(resumable.state_dict(), reference.state_dict(), atol=0, rtol=0)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 5


def test_sigint_saves_state_and_the_rerun_resumes(tmp_path):
    calls = []

    def step_then_interrupt(policy, batch, optimizer):
        calls.append(batch["timestep"].shape)
        out = diffusion_step(policy, batch, optimizer)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    with pytest.raises(TrainingInterrupted, match="SIGINT at step 3"):
        train_diffusion_policy(
            episodes(), CFG, steps=8, out_dir=tmp_path, save_every=100, step=step_then_interrupt, **KW
        )
    assert len(calls) == 3 and json.loads((tmp_path / "train_state.json").read_text())["step"] == 3
    saved = torch.nn.ModuleDict({"policy": TinyDiffusionPolicy(CFG), "ema": TinyDiffusionPolicy(CFG)})
    assert load_train_state(tmp_path, saved, torch.optim.AdamW(saved["policy"].model.parameters())) == 3
    resumed = train_diffusion_policy(episodes(), CFG, steps=8, out_dir=tmp_path, **KW)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 8
    assert not torch.equal(resumed.model.head.weight, saved["ema"].model.head.weight)  # trained on from step 3


def test_other_settings_are_refused_and_steps_may_grow(tmp_path):
    train_diffusion_policy(episodes(), CFG, steps=2, out_dir=tmp_path, **KW)
    with pytest.raises(FileExistsError, match=r"train.lr 0.001 there, 0.002 now"):
        train_diffusion_policy(episodes(), CFG, steps=2, out_dir=tmp_path, **{**KW, "lr": 2e-3})
    with pytest.raises(FileExistsError, match=r"data.windows 36 there, 48 now"):
        train_diffusion_policy(episodes(4), CFG, steps=2, out_dir=tmp_path, **KW)
    train_diffusion_policy(episodes(), CFG, steps=4, out_dir=tmp_path, **{**KW, "warmup_steps": 4})  # extend
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 4
    train_diffusion_policy(episodes(), CFG, steps=1, out_dir=tmp_path, overwrite=True, **{**KW, "lr": 2e-3})
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 1


def test_extra_state_is_saved_and_restored_on_resume(tmp_path):
    class Counter:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    first = Counter()

    def counting(policy, batch, optimizer):
        first.n += 1
        return diffusion_step(policy, batch, optimizer)

    train_diffusion_policy(episodes(), CFG, steps=3, out_dir=tmp_path, step=counting, extra_state=first, **KW)
    assert json.loads((tmp_path / "train_state.json").read_text())["extra"] == {"n": 3}
    second = Counter()
    train_diffusion_policy(episodes(), CFG, steps=4, out_dir=tmp_path, extra_state=second, **KW)
    assert second.n == 3  # restored before training on
