"""Data-agnostic trainer for :class:`TinyDiffusionPolicy`: padded windows, AdamW + cosine LR + EMA."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._config import DiffusionPolicyConfig
from ._policy import TinyDiffusionPolicy


def make_windows(
    episodes: Sequence[dict[str, np.ndarray]], config: DiffusionPolicyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Cut every episode into (obs (N, To, O), action (N, T, A)) windows, one per step.

    Every step of an episode is the current (last) observation of exactly one window, as in
    LeRobot's sampler: a window of ``horizon`` steps starts ``n_obs_steps - 1`` steps before it,
    and steps outside the episode repeat its first / last step.  (The original sequence sampler
    stops ``n_action_steps - 1`` steps past the end instead, which never trains on the last
    ``horizon - n_action_steps - 1`` observations and drops episodes shorter than that.)
    """
    c = config
    pad_before, pad_after = c.n_obs_steps - 1, c.horizon - c.n_obs_steps
    obs_w, act_w = [], []
    for i, ep in enumerate(episodes):
        for key, dim in (("obs", c.obs_dim), ("action", c.action_dim)):
            arr = np.asarray(ep.get(key)) if key in ep else None
            if arr is None or arr.ndim != 2 or arr.shape[1] != dim:
                got = None if arr is None else arr.shape
                raise ValueError(f"episodes[{i}][{key!r}] has shape {got}; expected (T, {dim}).")
        obs, act = np.asarray(ep["obs"], np.float32), np.asarray(ep["action"], np.float32)
        if len(obs) != len(act) or len(obs) == 0:
            raise ValueError(f"episodes[{i}]: obs has {len(obs)} steps, action {len(act)}; expected equal, > 0.")
        T = len(obs)
        for start in range(-pad_before, T - c.horizon + pad_after + 1):
            idx = np.clip(np.arange(start, start + c.horizon), 0, T - 1)  # (horizon,)
            obs_w.append(obs[idx[: c.n_obs_steps]])
            act_w.append(act[idx])
    if not obs_w:
        raise ValueError("episodes: no training windows; pass at least one non-empty episode.")
    return np.stack(obs_w), np.stack(act_w)


class _EMA:
    """EMA of the weights with the warm-up of the original (power 0.75, max 0.9999)."""

    def __init__(self, model: torch.nn.Module, power: float = 0.75, max_decay: float = 0.9999) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_decay, self.step = power, max_decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.max_decay, max(0.0, 1 - (1 + self.step) ** -self.power))
        self.step += 1
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def train_diffusion_policy(
    episodes: Sequence[dict[str, np.ndarray]],
    config: DiffusionPolicyConfig,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 1e-3,
    warmup_steps: int = 100,
    seed: int = 0,
    log_dir: str | Path | None = None,
    progress: bool = True,
) -> TinyDiffusionPolicy:
    """Train a policy on ``episodes`` (dicts of ``"obs"`` (T, obs_dim), ``"action"`` (T, action_dim)).

    Returns the EMA policy in eval mode. Scalars go to TensorBoard under ``log_dir`` if given.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps}, batch_size={batch_size}: expected both >= 1.")
    torch.manual_seed(seed)
    obs_np, act_np = make_windows(episodes, config)
    policy = TinyDiffusionPolicy(config)
    policy.obs_normalizer.fit(torch.from_numpy(obs_np))
    policy.action_normalizer.fit(torch.from_numpy(act_np))
    obs = policy.obs_normalizer.normalize(torch.from_numpy(obs_np))  # (N, To, O)
    act = policy.action_normalizer.normalize(torch.from_numpy(act_np))  # (N, T, A)
    policy.train()
    ema = _EMA(policy)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))

    def lr_lambda(i: int) -> float:
        if i < warmup_steps:
            return (i + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (i - warmup_steps) / max(1, steps - warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))
    gen = torch.Generator().manual_seed(seed)
    n_train = config.num_train_timesteps
    bar = tqdm(range(steps), desc="train diffusion policy", disable=not progress)
    for i in bar:
        idx = torch.randint(0, len(obs), (batch_size,), generator=gen)
        x0, cond = act[idx], obs[idx]  # (B, T, A), (B, To, O)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, n_train, (batch_size,), generator=gen)
        pred = policy.model(policy.ddpm.add_noise(x0, noise, t), t, cond)
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(policy)
        if i % 50 == 0 or i == steps - 1:
            val = loss.item()
            bar.set_postfix(loss=f"{val:.4f}")
            if writer is not None:
                writer.add_scalar("train/loss", val, i)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], i)
    if writer is not None:
        writer.close()
    return ema.model.eval()
