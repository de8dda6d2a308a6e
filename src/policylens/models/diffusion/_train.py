"""Data-agnostic trainer for :class:`TinyDiffusionPolicy`: padded windows, AdamW + cosine LR + EMA.

The loop draws batches and calls a step function (:func:`diffusion_step` by default: one
optimisation step of the epsilon loss), so another loss plugs in without copying the loop.
Given an ``out_dir`` it is resumable like ``train_vla`` (``policylens.runs``): the saved state
holds the batch generator and the global random states (dropout), so a resumed run is the
uninterrupted one.

Under torchrun (``runs.distributed()``) every rank draws the global batch (windows, noise, timesteps)
from the same generator and trains on its slice, gradients averaged over the ranks (``_data_parallel``),
so without dropout the run is the one-process run; each rank draws its own dropout masks from a
stream seeded by (seed, step, rank), which leaves the shared random state, saved by rank 0 and
resumed by every rank, the same on all. Rank 0 writes and shows progress.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ...runs import (
    Generators,
    TrainingInterrupted,
    join_generators,
    load_train_extra,
    load_train_state,
    save_train_state,
    stop_on_signal,
)
from .._data_parallel import (
    agree_stop,
    average_gradients,
    check_device,
    check_split,
    claim,
    current,
    fingerprint,
    mean_scalars,
    part,
    rank_stream,
    same_everywhere,
    sync_module,
)
from ._config import DiffusionPolicyConfig
from ._policy import TinyDiffusionPolicy

StepFn = Callable[[TinyDiffusionPolicy, dict[str, torch.Tensor], torch.optim.Optimizer], dict[str, torch.Tensor]]


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


def _extra(extra_state: object | None) -> dict | None:
    return None if extra_state is None else extra_state.state_dict()


def diffusion_step(
    policy: TinyDiffusionPolicy, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """One optimisation step of the epsilon-prediction loss on ``batch``: normalised ``action``
    (B, T, A) and ``obs`` (B, To, O), ``noise`` (B, T, A), ``timestep`` (B,). Returns the scalars to
    log (detached); ``"loss"`` is the optimised total. Another loss plugs into
    :func:`train_diffusion_policy` as a function with this signature (``step=``); under torchrun it
    averages the gradients over the ranks before it steps, as this one does."""
    x0, noise, t = batch["action"], batch["noise"], batch["timestep"]
    pred = policy.model(policy.ddpm.add_noise(x0, noise, t), t, batch["obs"])  # (B, T, A)
    loss = F.mse_loss(pred, noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(policy.model.parameters())
    optimizer.step()
    return {"loss": loss.detach()}


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
    out_dir: str | Path | None = None,
    save_every: int = 500,
    run_settings: Mapping | None = None,
    overwrite: bool = False,
    step: StepFn | None = None,
    extra_state: object | None = None,
    generators: Generators | None = None,
    device: str | torch.device | None = None,
) -> TinyDiffusionPolicy:
    """Train a policy on ``episodes`` (dicts of ``"obs"`` (T, obs_dim), ``"action"`` (T, action_dim)).

    Returns the EMA policy in eval mode. Scalars go to TensorBoard under ``log_dir`` if given.
    With ``out_dir`` the run is resumable there: ``run.json`` records its settings (config, optimiser,
    episode counts, ``run_settings``; another run is refused unless ``overwrite``), the weights, EMA
    and optimiser state are saved every ``save_every`` steps, at the end and on SIGINT / SIGTERM
    (which then raise ``TrainingInterrupted``), and a rerun continues from the saved step.
    ``step`` replaces :func:`diffusion_step` (one optimisation step on a batch); ``extra_state``, an
    object with JSON-ready ``state_dict`` / ``load_state_dict`` (e.g. a retention step's λ), is saved
    and restored with the training state, as are ``generators`` (the step's own random generators by name).
    ``device``: where it trains (default: the CPU; under nccl, the rank's GPU). Under torchrun
    ``batch_size`` is the global batch (a multiple of the ranks), every rank holds the same
    ``episodes`` (checked) and ``out_dir`` is one directory they all read.
    """
    if steps < 1 or batch_size < 1 or save_every < 1:
        raise ValueError(f"steps={steps}, batch_size={batch_size}, save_every={save_every}: expected all >= 1.")
    d, device = current(), torch.device(device or "cpu")
    check_split(d, batch_size=batch_size)
    check_device(d, device)
    step = step or diffusion_step
    torch.manual_seed(seed)
    obs_np, act_np = make_windows(episodes, config)
    fix = "every rank must make the same episodes (the same seed and simulator)"
    same_everywhere(d, "training windows", fingerprint(obs_np, act_np), fix)
    policy = TinyDiffusionPolicy(config)
    policy.obs_normalizer.fit(torch.from_numpy(obs_np))
    policy.action_normalizer.fit(torch.from_numpy(act_np))
    obs = policy.obs_normalizer.normalize(torch.from_numpy(obs_np)).to(device)  # (N, To, O)
    act = policy.action_normalizer.normalize(torch.from_numpy(act_np)).to(device)  # (N, T, A)
    policy.to(device).train()
    ema = _EMA(policy)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    state = nn.ModuleDict({"policy": policy, "ema": ema.model})  # what train_state.* holds
    gen = torch.Generator().manual_seed(seed)  # batches, noise, timesteps; dropout draws from torch's generator
    generators = join_generators(generators, batches=gen)  # saved with the global random states
    start = 0
    if out_dir is not None:
        optim = {"batch_size": batch_size, "lr": lr, "weight_decay": weight_decay}  # not steps / warm-up: extendable
        counts = {"episodes": len(episodes), "windows": len(obs)}
        settings = {
            "config": config.to_dict(),
            "train": {**optim, "seed": seed},
            "data": {**counts, **(run_settings or {})},
        }
        claim(d, out_dir, settings, overwrite)
        start = load_train_state(out_dir, state, opt, generators)
        same_everywhere(d, "saved steps", start, f"{out_dir} must be one directory that every rank reads")
        ema.step = start
        if start and extra_state is not None:
            extra_state.load_state_dict(load_train_extra(out_dir))

    def lr_lambda(i: int) -> float:
        if i < warmup_steps:
            return (i + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (i - warmup_steps) / max(1, steps - warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda, last_epoch=start - 1 if start else -1)
    sync_module(d, state)  # rank 0's weights on every rank
    writer = None
    if log_dir is not None and d.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))
    n_train, mine = config.num_train_timesteps, part(d, batch_size)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train diffusion policy",
               disable=not (progress and d.main))  # fmt: skip
    done = saved = start
    try:
        with stop_on_signal(enabled=out_dir is not None, escalate=not d.active) as stop:
            for i in bar:
                idx = torch.randint(0, len(obs), (batch_size,), generator=gen)  # the global batch
                noise = torch.randn((batch_size, *act.shape[1:]), generator=gen)  # (B, T, A)
                timestep = torch.randint(0, n_train, (batch_size,), generator=gen)
                idx, noise, timestep = idx[mine].to(device), noise[mine].to(device), timestep[mine].to(device)
                batch = {"action": act[idx], "obs": obs[idx], "noise": noise, "timestep": timestep}
                with rank_stream(d, seed, i):
                    scalars = mean_scalars(d, step(policy, batch, opt))
                sched.step()
                ema.update(policy)
                done = i + 1
                if i % 50 == 0 or i == steps - 1:
                    bar.set_postfix(loss=f"{scalars['loss']:.4f}")
                    if writer is not None:
                        for name, value in scalars.items():
                            writer.add_scalar(f"train/{name}", value, i)
                        writer.add_scalar("train/lr", sched.get_last_lr()[0], i)
                signum = agree_stop(d, stop.signum)
                if out_dir is not None and (done % save_every == 0 or signum is not None):
                    if d.main:
                        save_train_state(out_dir, state, opt, done, _extra(extra_state), generators)
                    saved = done
                if signum is not None:
                    d.barrier()  # rank 0 has saved
                    raise TrainingInterrupted(signum, done, out_dir)
    finally:
        if writer is not None:
            writer.close()
    if out_dir is not None and saved != done and d.main:
        save_train_state(out_dir, state, opt, done, _extra(extra_state), generators)
    d.barrier()
    return ema.model.eval()
