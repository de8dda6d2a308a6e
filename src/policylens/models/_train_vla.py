"""Train TinyVLA with its flow-matching loss on episodes (any source: simulation, DROID, LeRobot).

An episode is a dict: ``images`` {camera: (T, H, W, 3) uint8}, ``state`` (T, state_dim),
``action`` (T, action_dim), ``instruction`` str. A sample is (episode, t): the frames and
state at t and the action chunk t … t+H−1 (the last action repeats past the end).
Training is resumable: ``train_state.*`` is written every ``save_every`` steps and read
back when the same output directory is used again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ._checkpoint import save_policy
from ._tiny_vla import TinyVLA
from ._train_state import load_train_state, save_train_state

__all__ = ["VLATrainConfig", "chunk_samples", "set_normalization", "train_vla"]


@dataclass
class VLATrainConfig:
    steps: int = 3000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    save_every: int = 250

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VLATrainConfig.{name}={getattr(self, name)} must be positive")


def chunk_samples(episodes: list[dict], chunk: int) -> list[tuple[int, int, np.ndarray]]:
    """(episode, t, action-row indices of the chunk) for every step of every episode."""
    out = []
    for e, ep in enumerate(episodes):
        for key in ("images", "state", "action", "instruction"):
            if key not in ep:
                raise KeyError(f"train_vla: episode {e} lacks field {key!r} (need images, state, action, instruction)")
        n = len(ep["action"])
        for t in range(n):
            out.append((e, t, np.minimum(np.arange(t, t + chunk), n - 1)))
    return out


def set_normalization(model: TinyVLA, episodes: list[dict]) -> None:
    """Per-dimension mean / std of states and actions over the episodes, into the model."""
    for name in ("state", "action"):
        data = torch.as_tensor(np.concatenate([np.asarray(ep[name], dtype=np.float32) for ep in episodes]))
        getattr(model, f"{name}_mean").copy_(data.mean(0))
        getattr(model, f"{name}_std").copy_(data.std(0).clamp(min=1e-3))


def _batch(model: TinyVLA, episodes: list[dict], samples: list, rows: np.ndarray) -> dict[str, torch.Tensor]:
    picks = [samples[i] for i in rows]
    images = {
        c: torch.as_tensor(np.stack([episodes[e]["images"][c][t] for e, t, _ in picks])) for c in model.config.cameras
    }
    state = torch.as_tensor(np.stack([episodes[e]["state"][t] for e, t, _ in picks]), dtype=torch.float32)
    batch = model.make_batch(images, [episodes[e]["instruction"] for e, _, _ in picks], state)
    batch["action"] = torch.as_tensor(
        np.stack([episodes[e]["action"][idx] for e, _, idx in picks]), dtype=torch.float32
    )
    return batch


def train_vla(model: TinyVLA, episodes: list[dict], config: VLATrainConfig, out_dir: str | Path) -> list[float]:
    """Train ``model`` in place; write TensorBoard logs, resumable state and the final
    checkpoint (``config.json`` + ``model.safetensors``) into ``out_dir``."""
    out_dir = Path(out_dir)
    samples = chunk_samples(episodes, model.config.chunk_size)
    if not samples:
        raise ValueError("train_vla: the episodes hold no steps")
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = load_train_state(out_dir, model, opt)
    if start == 0:
        set_normalization(model, episodes)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps))),
        last_epoch=start - 1 if start else -1,
    )
    writer = SummaryWriter(str(out_dir / "tb"))
    rng = np.random.default_rng(config.seed + start)
    losses: list[float] = []
    model.train()
    for step in tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train TinyVLA"):
        batch = _batch(model, episodes, samples, rng.integers(0, len(samples), config.batch_size))
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        writer.add_scalar("loss/flow_matching", losses[-1], step)
        writer.add_scalar("lr", sched.get_last_lr()[0], step)
        if (step + 1) % config.save_every == 0:
            save_train_state(out_dir, model, opt, step + 1)
    writer.close()
    model.eval()
    save_policy(model, out_dir)
    return losses
