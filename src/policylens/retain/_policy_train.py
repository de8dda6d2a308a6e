"""``policy_train``: fine-tune a researcher's own policy — a LeRobot SmolVLA / pi0 / pi0.5
(``LeRobotTeacher``) or a transformers PI0 / PI05 (``NativePIPolicy``) — on episodes from disk, with
the policy's own training loss (``model.training_loss``) as L_act and, given an anchor cache, the
retention step of ``retain_train`` (:func:`retention_step`: λ, projection, the per-step series).
Without anchors it is plain fine-tuning through the same loop (method ``plain``).

A sample is (episode, t): the frames and state at t and the action chunk t … t+H−1 (the last action
repeats past the end), made into the policy's inputs by its own ``make_batch`` (pre-processor /
processor: its normalisation). Experience replay by fraction: with ``replay_fraction`` F each global
batch of B rows holds ``round(F·B)`` rows drawn uniformly from the replay episodes' steps and the rest
from the task's, shuffled. The flow noise and time of every row are drawn for the global batch by the
loop (``model.training_noise``), so a rank's slice is what one process draws.

Resumable like ``train_vla``: model, optimiser, λ, the anchor generator, the batch / noise generators
and the global random states are saved every ``save_every`` steps, at the end and on SIGINT / SIGTERM.
Under torchrun each rank trains on its slice of the global batches, the Retainer sees the loss through
DDP (gradients and L_ret averaged over the ranks); rank 0 writes ``run.json``, the state, TensorBoard
(``OUT/tb``), the fine-tuned policy (``OUT/policy``, loadable with ``load_model``) and ``retain.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..runs import (
    TrainingInterrupted,
    check_run_dir,
    claim_run_dir,
    load_train_extra,
    load_train_state,
    save_train_state,
    shard,
    stop_on_signal,
    weights_hash,
)
from ._data_parallel import check_split, ranks
from ._retainer import Retainer, RetentionConfig
from ._train import (
    RetainTrainConfig,
    _finished,
    _summary,
    _write_summary,
    finished_message,
    open_anchors,
    retention_step,
)

__all__ = ["POLICY_METHODS", "PolicyTrainConfig", "check_trainable", "policy_train"]

POLICY_METHODS = ("training_loss", "training_noise", "make_batch")


@dataclass
class PolicyTrainConfig(RetainTrainConfig):
    """Optimiser and data side of :func:`policy_train`: :class:`RetainTrainConfig`'s fields (global
    ``batch_size`` / ``anchor_batch_size``, ``retain_every``, ``preload_anchors``, ``anchor_features``)
    with a smaller default learning rate for pretrained VLAs, no task statistics (the policy's own
    pre-processor normalises), and ``replay_fraction``: the share of each batch's rows drawn from the
    replay episodes."""

    lr: float = 1e-5
    task_stats: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task_stats:
            raise ValueError("PolicyTrainConfig.task_stats=True: the policy's pre-processor normalises; use False")


def check_trainable(model: nn.Module, name: str = "policy") -> None:
    """``model`` has what the loop calls: training_loss, training_noise, make_batch, config.chunk_size."""
    missing = [m for m in POLICY_METHODS if not callable(getattr(model, m, None))]
    if missing or getattr(getattr(model, "config", None), "chunk_size", None) is None:
        raise ValueError(
            f"{name}: a {type(model).__name__} has no {missing or ['config.chunk_size']}; this loop fine-tunes a "
            "LeRobot SmolVLA / pi0 / pi0.5 checkpoint directory or a transformers PI0 / PI05 directory (TinyVLA: "
            "retain_train)"
        )


def _samples(episodes: Sequence[dict], chunk: int, first: int = 0) -> list[tuple[int, int, np.ndarray]]:
    """(episode, t, action rows of the chunk) of every step; episodes numbered from ``first``."""
    out = []
    for e, ep in enumerate(episodes, start=first):
        n = len(ep["action"])
        out += [(e, t, np.minimum(np.arange(t, t + chunk), n - 1)) for t in range(n)]
    return out


def _batch(model: nn.Module, episodes: Sequence[dict], picks: Sequence[tuple]) -> dict[str, Tensor]:
    cams = model.config.cameras
    images = {c: torch.as_tensor(np.stack([episodes[e]["images"][c][t] for e, t, _ in picks])) for c in cams}
    state = torch.as_tensor(np.stack([episodes[e]["state"][t] for e, t, _ in picks]), dtype=torch.float32)
    actions = torch.as_tensor(np.stack([episodes[e]["action"][idx] for e, _, idx in picks]), dtype=torch.float32)
    return model.make_batch(images, [episodes[e]["instruction"] for e, _, _ in picks], state, actions=actions)


class _PolicyLoss(nn.Module):
    """The policy's own training loss as a module: what the Retainer calls (through DDP under torchrun)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> Tensor:
        return self.model.training_loss(batch)


def _retainer(model: nn.Module, student: Callable | None, retention: RetentionConfig) -> Retainer:
    loss: nn.Module = _PolicyLoss(model)
    d, device = ranks(), next(model.parameters()).device
    if d.active:
        ids = [device.index] if device.type == "cuda" else None
        loss = nn.parallel.DistributedDataParallel(loss, device_ids=ids, broadcast_buffers=False)
    return Retainer(loss, lambda m, b: m(b), student, retention)


def _claim(out: Path, settings: dict, overwrite: bool) -> None:
    d = ranks()
    if not overwrite:
        check_run_dir(out, settings)
    d.barrier()
    if d.main:
        claim_run_dir(out, settings, overwrite)
    d.barrier()


def _agree(signum: int | None) -> int | None:
    """A signal any rank got, on every rank (they stop at the same step)."""
    if not ranks().active:
        return signum
    flag = torch.tensor([signum or 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) or None


def _check_batch(model: nn.Module, episodes: Sequence[dict], name: str) -> None:
    """One sample through ``make_batch`` with its actions: the pre-processor / processor can normalise them."""
    try:
        _batch(model, episodes, _samples(episodes[:1], model.config.chunk_size)[:1])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: cannot make a training batch from the episodes: {exc}") from None


def policy_train(
    model: nn.Module,
    episodes: list[dict],
    out: str | Path,
    config: PolicyTrainConfig,
    retention: RetentionConfig | None = None,
    anchors: str | Path | None = None,
    replay: list[dict] | None = None,
    run_settings: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Fine-tune ``model`` (in place, on its device) on ``episodes`` (the trainers' format: ``images``,
    ``state``, ``action``, ``instruction``), with ``replay`` episodes mixed into every batch by
    ``config.replay_fraction``; with ``anchors`` (a bridge cache of the teacher) under ``retention``
    (default CRaFT), without them plain fine-tuning. Writes ``OUT/policy``, ``retain.json``, TensorBoard
    and the resumable state; a run that already ran ``config.steps`` is left as it is. Returns the summary."""
    from policylens.models import check_replay

    say, d, out = log or (lambda line: None), ranks(), Path(out)
    name = str(getattr(model, "source", None) or type(model).__name__)
    check_trainable(model, f"policy {name}")
    check_split(d.world, batch_size=config.batch_size, anchor_batch_size=config.anchor_batch_size)
    retention = retention or RetentionConfig()
    if anchors is None and retention.method != "plain":
        raise ValueError(f"retention method {retention.method!r} needs anchors= (a bridge cache); or method='plain'")
    replay = list(replay or [])
    if not episodes:
        raise ValueError("policy_train: no task episodes")
    check_replay(config.replay_fraction, config.batch_size, replay, type(config).__name__)
    _check_batch(model, episodes, f"policy {name}")
    torch.manual_seed(config.seed)
    anchor_set = None
    if anchors is not None:
        anchor_set = open_anchors(anchors, model.eval(), config.preload_anchors, config.anchor_features)
    counts = {"episodes": len(episodes), "replay_episodes": len(replay),
              "steps_in_episodes": int(sum(len(ep["action"]) for ep in episodes + replay))}  # fmt: skip
    data = {**(run_settings or {}), "policy": name, "anchors": None if anchors is None else str(anchors),
            "retention": dataclasses.asdict(retention), "anchor_batch_size": config.anchor_batch_size,
            "task_stats": {"enabled": False}, **counts}  # fmt: skip
    train = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("steps", "save_every")}
    ident = {"class": type(model).__name__, "variant": getattr(model, "variant", None), "weights": weights_hash(model)}
    settings = {"model": ident, "train": train, "data": data}
    if not overwrite and check_run_dir(out, settings):
        summary = _finished(out, config.steps, write=d.main)
        if summary is not None:
            say(finished_message(out, summary))
            return summary
    _claim(out, settings, overwrite)
    return _run(model, episodes, replay, out, config, retention, anchor_set, data, progress)


def _run(model, episodes, replay, out, config, retention, anchor_set, data, progress) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from policylens.models import mixed_rows, replay_rows

    d = ranks()
    chunk = model.config.chunk_size
    task, rep = _samples(episodes, chunk), _samples(replay, chunk, first=len(episodes))
    pool, every = episodes + replay, task + rep
    n_replay = replay_rows(config.replay_fraction, config.batch_size)  # rows of every global batch
    student = anchor_set.student if anchor_set is not None else None
    step = retention_step(_retainer(model, student, retention), anchor_set, config)
    opt = torch.optim.AdamW(step.retainer.params, lr=config.lr, weight_decay=config.weight_decay)
    rng, noise_gen = np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed)
    generators = {"batches": rng, "noise": noise_gen}
    start = load_train_state(out, model, opt, generators)
    if start:
        step.load_state_dict(load_train_extra(out))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps))),
        last_epoch=start - 1 if start else -1,
    )
    writer = SummaryWriter(str(out / "tb")) if d.main else None
    mine, device = shard(range(config.batch_size), d.rank, d.world), next(model.parameters()).device
    done = saved = start
    model.train()
    try:
        with stop_on_signal(escalate=not d.active) as stop:
            bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="retain train",
                       disable=not (d.main and progress))  # fmt: skip
            for i in bar:
                rows = mixed_rows(rng, len(task), len(rep), config.batch_size, n_replay)
                noise = model.training_noise(config.batch_size, noise_gen, rng)  # the global batch's
                batch = _batch(model, pool, [every[r] for r in rows[mine]])
                batch.update({k: v[mine] for k, v in noise.items()})
                scalars = step(model, {k: v.to(device) for k, v in batch.items()}, opt)
                sched.step()
                done = i + 1
                if writer is not None:
                    for key, value in scalars.items():
                        writer.add_scalar(f"train/{key}", float(value), i)
                    writer.add_scalar("train/lr", sched.get_last_lr()[0], i)
                signum = _agree(stop.signum)
                if done % config.save_every == 0 or signum is not None:
                    if d.main:
                        save_train_state(out, model, opt, done, step.state_dict(), generators)
                    saved = done
                if signum is not None:
                    d.barrier()
                    raise TrainingInterrupted(signum, done, out)
    except TrainingInterrupted:
        if d.main:
            _write_summary(out, _summary(step.state_dict(), data, done, config.steps))
        raise
    finally:
        if writer is not None:
            writer.close()
        model.eval()
    if d.main:
        if saved != done:
            save_train_state(out, model, opt, done, step.state_dict(), generators)
        model.save_policy(out / "policy")
    summary = _summary(step.state_dict(), data, done, config.steps)
    if d.main:
        _write_summary(out, summary)
    d.barrier()
    return summary
