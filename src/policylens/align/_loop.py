"""The training loop the alignment stages share, in one process or as torchrun ranks.

:func:`_loop` resumes from ``out`` (model, optimiser, scaler, skipped count, the place in the data
order, every random state), calls a step function to ``cfg.steps`` inside ``stop_on_signal`` and
writes TensorBoard scalars and the training state. :class:`Amp` does autocast (bf16 on CPU / CUDA,
fp16 with a ``GradScaler`` on CUDA) and skips a step whose loss or gradients are not finite.

Under torchrun (``runs.distributed``, ``world`` > 1) the model is wrapped in
``DistributedDataParallel`` and the step gets the wrapper (:func:`unwrap` gives the module): its
forward must compute the loss, so that the gradients are averaged over the ranks. Every rank reads
a disjoint shard of every global batch (``make_loader(rank=, world=)``), so the data order, the
global batch and the random states are those of one process; :func:`scaled` weighs a rank's mean
loss by ``world · share`` (its share of the batch), so the averaged gradient is that of the global
batch's mean loss. Rank 0 alone shows progress and writes TensorBoard and the training state; every
rank loads the same state, so a run resumes with any number of ranks. The logged scalars are the
means over ranks (``rows``: the sum). A signal on any rank stops every rank after the same step, once
rank 0 has saved (under torchrun a Ctrl-C reaches each rank twice, so a second signal does not skip
the save).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..runs import (
    Dist,
    RunDirError,
    TrainingInterrupted,
    load_train_extra,
    load_train_state,
    save_train_state,
    stop_on_signal,
)
from ._dataset import BatchStream

__all__ = ["Amp", "StepFn", "first_on_main", "group_device", "rank_device", "scaled", "unwrap", "world"]

StepFn = Callable[[nn.Module, dict, torch.optim.Optimizer, "Amp"], dict[str, float]]
SUMMED = ("rows",)  # logged scalars summed over ranks; the rest are averaged


def world() -> int:
    """The ranks of the process group (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (the model itself in one process)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def scaled(loss: Tensor, batch: dict, share: float | None = None) -> Tensor:
    """A rank's mean ``loss`` times ``world · share`` (its share of the global batch, the batch's own
    by default), so the mean over ranks is the global batch's mean; unchanged in one process."""
    if "share" not in batch:
        return loss
    return loss * (world() * (batch["share"] if share is None else share))


def _all_reduce(values: list[float], device: torch.device, op=dist.ReduceOp.SUM) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def group_device(device: str) -> str | None:
    """The ``device`` to pass ``runs.distributed``: gloo for a CPU run, the rank's GPU otherwise."""
    return "cpu" if torch.device(device).type == "cpu" else None


def rank_device(device: str, d: Dist) -> torch.device:
    """``device`` for this rank: as given in one process; under torchrun ``cuda`` is the rank's GPU."""
    if not d.active or torch.device(device).type == "cpu":
        return torch.device(device)
    if device != "cuda":
        raise ValueError(
            f"device={device!r} under torchrun ({d.world} ranks): every rank would use that device; pass "
            "--device cuda (each rank takes cuda:LOCAL_RANK) or --device cpu"
        )
    if d.device.type != "cuda":
        raise ValueError("device='cuda' but this rank sees no CUDA device; pass --device cpu")
    return d.device


def first_on_main(d: Dist, fn: Callable[[], object]) -> None:
    """``fn()`` on rank 0 while the other ranks wait (claiming the run directory); an error it raises
    is raised on every rank."""
    if not d.active:
        fn()
        return
    if d.main:
        try:
            fn()
        except (ValueError, OSError) as exc:
            d.broadcast([isinstance(exc, FileExistsError), str(exc)])
            raise
        d.broadcast(None)
        return
    refused = d.broadcast(None)
    if refused is not None:
        raise (RunDirError if refused[0] else ValueError)(refused[1])


class Amp:
    """Autocast + non-finite step skipping: ``amp.step(loss, optimizer)`` -> True if the step was applied."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode == "fp16" and device.type != "cuda":
            raise ValueError(f"amp='fp16' needs a CUDA device (got {device}); use amp='bf16' or 'none' on CPU")
        self.mode, self.device = mode, device
        self.scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None

    def autocast(self):
        if self.mode == "none":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.mode == "bf16" else torch.float16)

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> bool:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # GradScaler skips non-finite gradients and lowers its scale
            self.scaler.scale(loss).backward()
            scale = self.scaler.get_scale()
            self.scaler.step(optimizer)
            self.scaler.update()
            return self.scaler.get_scale() >= scale
        ranks = world() > 1
        if not ranks and not torch.isfinite(loss):
            return False
        loss.backward()  # under DDP on every rank, so that the gradient all-reduce meets
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        ok = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(x).all()) for x in grads)
        if ranks:  # every rank skips, or none
            ok = _all_reduce([float(ok)], loss.device, dist.ReduceOp.MIN)[0] > 0
        if not ok:
            optimizer.zero_grad(set_to_none=True)
            return False
        optimizer.step()
        return True

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def _wrap(model: nn.Module, d: Dist) -> nn.Module:
    if not d.active:
        return model
    if d.device.type == "cuda":  # BatchNorm statistics over the global batch (SyncBatchNorm needs CUDA)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [d.device.index] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _mean_logs(logs: dict[str, float], d: Dist, device: torch.device) -> dict[str, float]:
    if not d.active:
        return logs
    keys = sorted(logs)
    sums = _all_reduce([float(logs[k]) for k in keys], device)
    return {k: v if k in SUMMED else v / d.world for k, v in zip(keys, sums, strict=True)}


def _stop(signum: int | None, d: Dist, device: torch.device) -> int | None:
    """The signal that stops the run after this step: this rank's, or any rank's under torchrun."""
    if not d.active:
        return signum
    got = int(_all_reduce([float(signum or 0)], device, dist.ReduceOp.MAX)[0])
    return got or None


def _loop(out: Path, model: nn.Module, opt, amp: Amp, step: StepFn, loader, cfg, evaluate=None, desc="", d=None):
    """Resume from ``out``, run ``step`` to ``cfg.steps`` with TensorBoard, checkpoints and signal handling
    (``d``: this rank, see the module docstring)."""
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard loads only when a run trains

    d = d or Dist()
    device = next(model.parameters()).device
    batches = BatchStream(loader)  # the data order and the place in it
    model.row_gen = torch.Generator().manual_seed(cfg.seed)  # max_rows subsets
    generators = {"rows": model.row_gen, **batches.generators()}
    start = load_train_state(out, model, opt, generators)  # with every random state
    extra = load_train_extra(out) if start else {}
    amp.load_state_dict(extra.get("scaler", {}))
    skipped, losses, batches.taken = int(extra.get("skipped", 0)), [], int(extra.get("taken", 0))
    net = _wrap(model, d)

    def save(done: int) -> None:
        if d.main:
            state = {"scaler": amp.state_dict(), "skipped": skipped, "taken": batches.taken}
            save_train_state(out, model, opt, done, state, generators)

    writer = SummaryWriter(str(out / "tb")) if d.main else None
    bar = tqdm(
        range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, disable=not (cfg.progress and d.main)
    )
    done, saved = start, start
    try:
        with stop_on_signal(escalate=not d.active) as stop:  # torchrun: a Ctrl-C arrives twice, still saved
            for i in bar:
                logs = _mean_logs(step(net, next(batches), opt, amp), d, device)
                done, skipped = i + 1, skipped + int(logs.get("skipped", 0))
                losses.append(logs["loss"])
                if writer is not None:
                    for k, v in logs.items():
                        writer.add_scalar(k if "/" in k else f"train/{k}", v, done)
                    writer.add_scalar("train/skipped_total", skipped, done)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", skipped=skipped)
                if evaluate is not None and d.main and (done % cfg.eval_every == 0 or done == cfg.steps):
                    for k, v in evaluate().items():
                        writer.add_scalar(k, v, done)
                signum = _stop(stop.signum, d, device)
                if done % cfg.save_every == 0 or signum is not None:
                    save(done)
                    saved = done
                if signum is not None:
                    d.barrier()  # the state is on disk before any rank reports it
                    raise TrainingInterrupted(signum, done, out)
    finally:
        if writer is not None:
            writer.close()
    if saved != done or not (out / "train_state.json").is_file():
        save(done)
    return {"step": done, "skipped": skipped, "losses": losses}
