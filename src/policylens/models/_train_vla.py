"""Train TinyVLA with its flow-matching loss on episodes (any source: simulation, DROID, LeRobot).

An episode is a dict: ``images`` {camera: (T, H, W, 3) uint8}, ``state`` (T, state_dim),
``action`` (T, action_dim), ``instruction`` str. A sample is (episode, t): the frames and
state at t and the action chunk t … t+H−1 (the last action repeats past the end). Experience replay
by fraction: with ``replay=`` episodes and ``replay_fraction`` F each global batch of B rows holds
``round(F·B)`` replay rows (``_replay``). Training is resumable: ``train_state.*`` is written every
``save_every`` steps, at the end and on SIGINT / SIGTERM, and read back when the same run uses the
same output directory again; it holds the batch generator and every global random state, so a
resumed run is the uninterrupted one.

Under torchrun (a process group joined with ``runs.distributed()``) every rank draws the same global
batch and its flow noise, trains on its slice and averages the gradients before clipping
(``_data_parallel``): the run is the one-process run on the global batch. Rank 0 writes and shows
progress; every rank resumes from the saved state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..runs import (
    Generators,
    TrainingInterrupted,
    check_run_dir,
    join_generators,
    load_checkpoint,
    load_train_extra,
    load_train_state,
    save_checkpoint,
    save_train_state,
    stop_on_signal,
)
from ._data_parallel import (
    agree_stop,
    average_gradients,
    check_device,
    check_split,
    claim,
    current,
    fingerprint,
    mean_scalars,
    part,
    same_everywhere,
    sync_module,
)
from ._replay import check_replay, check_replay_fraction, mixed_rows, replay_rows
from ._tiny_vla import TinyVLA

__all__ = [
    "VLA_OPTIONAL_SETTINGS",
    "StepFn",
    "VLATrainConfig",
    "check_vla_run",
    "chunk_samples",
    "flow_loss",
    "flow_noise",
    "load_tiny_vla_init",
    "run_settings_of",
    "set_normalization",
    "train_vla",
    "vla_step",
]

VLA_OPTIONAL_SETTINGS = {"train.replay_fraction": 0.0}  # recorded only when set: earlier runs still match
StepFn = Callable[[TinyVLA, dict[str, Tensor], torch.optim.Optimizer], dict[str, Tensor]]


@dataclass
class VLATrainConfig:
    steps: int = 3000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    save_every: int = 250
    fit_normalization: bool = True  # False: keep the model's state / action statistics (fine-tuning)
    replay_fraction: float = 0.0  # the share of each batch's rows drawn from train_vla's replay= episodes

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VLATrainConfig.{name}={getattr(self, name)} must be positive")
        check_replay_fraction(self.replay_fraction, self.batch_size, "VLATrainConfig")


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


def flow_noise(model: TinyVLA, n: int) -> dict[str, Tensor]:
    """``noise`` (n, H, action_dim) and ``time`` (n,) of the flow-matching loss, drawn from torch's
    generator as :meth:`TinyVLA.loss` draws them: drawn for a global batch and sliced per rank, they
    are what one process draws."""
    noise = torch.randn((n, *model.noise_shape))
    beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
    return {"noise": noise, "time": beta.sample((n,)) * 0.999 + 0.001}


def flow_loss(model: TinyVLA, batch: dict[str, Tensor]) -> Tensor:
    """:meth:`TinyVLA.loss` with the batch's ``noise`` and ``time`` (:func:`flow_noise`); a batch
    without them draws its own."""
    return model.loss(batch, noise=batch.get("noise"), time=batch.get("time"))


def vla_step(model: TinyVLA, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """One optimisation step on ``batch``: flow-matching loss, backward, gradients averaged over the
    ranks (under torchrun), clip to norm 1, optimiser step.

    Returns the scalars to log (detached); ``"loss"`` is the optimised total. Another loss plugs
    into :func:`train_vla` as a function with this signature (``step=``); under torchrun it averages
    the gradients the same way before it clips (``_data_parallel.average_gradients``)."""
    loss = flow_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(model.parameters())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return {"loss": loss.detach()}


def run_settings_of(
    model: TinyVLA, config: VLATrainConfig, episodes: list[dict], data: Mapping | None, replay: list[dict] = ()
) -> dict:
    """What makes a run this run: model config, optimiser settings, data (not ``steps``: a rerun may extend it).
    The replay fraction and episodes are recorded only when used, so earlier runs' settings still match."""
    train = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("steps", "save_every")}
    if not config.replay_fraction:
        del train["replay_fraction"]
    every = list(episodes) + list(replay)
    counts = {"episodes": len(episodes), "steps_in_episodes": int(sum(len(ep["action"]) for ep in every))}
    if replay:
        counts["replay_episodes"] = len(replay)
    return {"model": model.config.to_dict(), "train": train, "data": {**counts, **(data or {})}}


def check_vla_run(
    out_dir: str | Path, model: TinyVLA, config: VLATrainConfig, *, episodes: int, data: Mapping | None = None
) -> bool:
    """Refuse ``out_dir`` if it holds another run than :func:`train_vla` would record there, before the
    episodes exist: the settings known up front (model, optimiser, ``episodes`` to make, ``data``) are
    compared, the step counts of the episodes are not. True when it holds this run (a rerun resumes),
    False when it holds none; another run raises ``runs.RunDirError``."""
    if episodes < 1:
        raise ValueError(f"check_vla_run: episodes={episodes}; expected the number of episodes to make, >= 1")
    known = run_settings_of(model, config, episodes=[], data=data)
    known["data"] = {"episodes": episodes, **(data or {})}
    return check_run_dir(out_dir, known, partial=True, defaults=VLA_OPTIONAL_SETTINGS)


def load_tiny_vla_init(path: str | Path, *, image_size: int, use_state: bool) -> TinyVLA:
    """The TinyVLA checkpoint at ``path`` (or a registered name) as the start of a fine-tuning run with
    these settings. A checkpoint of another type, or one whose ``image_size`` / ``use_state`` differ,
    raises a ``ValueError`` that starts with ``path`` and names what it has and what was asked."""
    model = load_checkpoint(path)
    if not isinstance(model, TinyVLA):
        raise ValueError(f"{path}: a {type(model).__name__} checkpoint; fine-tuning needs a TinyVLA one")
    have = {"image_size": model.config.image_size, "use_state": model.config.use_state}
    want = {"image_size": image_size, "use_state": use_state}
    if have != want:
        raise ValueError(f"{path}: the checkpoint has {have}, the run asks for {want}; pass its values")
    return model


def train_vla(
    model: TinyVLA,
    episodes: list[dict],
    config: VLATrainConfig,
    out_dir: str | Path,
    run_settings: Mapping | None = None,
    overwrite: bool = False,
    step: StepFn = vla_step,
    state: object | None = None,
    generators: Generators | None = None,
    replay: list[dict] | None = None,
) -> list[float]:
    """Train ``model`` in place on its device; write TensorBoard logs, resumable state and the final
    checkpoint (``config.json`` + ``model.safetensors``) into ``out_dir``.

    ``out_dir`` belongs to one run (``run.json``: model and optimiser settings, episode counts and
    ``run_settings``, e.g. how the episodes were made): the same run resumes from its saved state,
    another one is refused unless ``overwrite``. State is saved every ``config.save_every`` steps,
    at the end, and on SIGINT / SIGTERM, which then raise :class:`TrainingInterrupted`.
    ``step``: the optimisation step (:func:`vla_step` or one with its signature, e.g. a retention
    step); ``state``: an object with ``state_dict()`` / ``load_state_dict()`` (JSON-ready) saved
    and restored with the training state; ``generators``: the step's own random generators by name
    (torch or numpy), saved and restored with the batch generator and the global random states.
    ``replay``: episodes mixed into every batch by ``config.replay_fraction`` (both or neither).
    Under torchrun ``config.batch_size`` is the global batch (a multiple of the ranks), every rank
    holds the same ``episodes`` (checked) and ``out_dir`` is one directory they all read.
    Returns the losses (of the global batch) of the steps run by this call.
    """
    out_dir = Path(out_dir)
    d = current()
    check_split(d, **{"VLATrainConfig.batch_size": config.batch_size})
    replay = list(replay or [])
    check_replay(config.replay_fraction, config.batch_size, replay, "VLATrainConfig")
    every = list(episodes) + replay  # the task's samples first, then the replay's
    samples = chunk_samples(every, model.config.chunk_size)
    n_task = sum(len(ep["action"]) for ep in episodes)  # one sample per step
    if not n_task:
        raise ValueError("train_vla: the episodes hold no steps")
    device = next(model.parameters()).device
    check_device(d, device)
    data = [x for ep in every for x in (ep["state"], ep["action"], ep["instruction"])]
    fix = "every rank must make the same episodes (the same seed and simulator, or the same dataset)"
    same_everywhere(d, "episodes (states, actions, instructions)", fingerprint(*data), fix)
    claim(d, out_dir, run_settings_of(model, config, episodes, run_settings, replay), overwrite)
    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)  # the batches; the flow noise draws from torch's generator
    generators = join_generators(generators, batches=rng)
    start = load_train_state(out_dir, model, opt, generators)  # with every random state
    same_everywhere(d, "saved steps", start, f"{out_dir} must be one directory that every rank reads")
    if start and state is not None:
        state.load_state_dict(load_train_extra(out_dir))
    if start == 0 and config.fit_normalization:
        set_normalization(model, every)
    sync_module(d, model)  # rank 0's weights on every rank
    extra = (lambda: state.state_dict()) if state is not None else (lambda: None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps))),
        last_epoch=start - 1 if start else -1,
    )
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard loads only when a run trains

    writer = SummaryWriter(str(out_dir / "tb")) if d.main else None
    mine = part(d, config.batch_size)
    n_replay = replay_rows(config.replay_fraction, config.batch_size)
    losses: list[float] = []
    model.train()
    done = saved = start
    try:
        with stop_on_signal(escalate=not d.active) as stop:
            bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train TinyVLA",
                       disable=not d.main)  # fmt: skip
            for i in bar:
                if replay:  # the global batch
                    rows = mixed_rows(rng, n_task, len(samples) - n_task, config.batch_size, n_replay)
                else:
                    rows = rng.integers(0, n_task, config.batch_size)
                noise = flow_noise(model, config.batch_size)
                batch = _batch(model, every, samples, rows[mine])
                batch.update({k: v[mine] for k, v in noise.items()})
                scalars = mean_scalars(d, step(model, {k: v.to(device) for k, v in batch.items()}, opt))
                sched.step()
                done = i + 1
                losses.append(scalars["loss"])
                if writer is not None:
                    for name, value in scalars.items():
                        writer.add_scalar(f"train/{name}", value, i)
                    writer.add_scalar("train/lr", sched.get_last_lr()[0], i)
                signum = agree_stop(d, stop.signum)
                if done % config.save_every == 0 or signum is not None:
                    if d.main:
                        save_train_state(out_dir, model, opt, done, extra(), generators)
                    saved = done
                if signum is not None:
                    d.barrier()  # rank 0 has saved
                    raise TrainingInterrupted(signum, done, out_dir)
    finally:
        if writer is not None:
            writer.close()
        model.eval()
    if d.main:
        if saved != done:
            save_train_state(out_dir, model, opt, done, extra(), generators)
        save_checkpoint(model, out_dir)
    d.barrier()
    return losses
