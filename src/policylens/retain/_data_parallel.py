"""``retain_train`` under torchrun: the task loss the Retainer sees (through DDP when there are
several ranks, so that both gradients and L_ret are averaged before the projection and the λ update),
the rank's place in the group, and the checks on the global batches that every rank slices.
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..runs import Dist
from ._anchors import AnchorSet
from ._retainer import Retainer, RetentionConfig

__all__ = ["check_split", "on_device", "ranks", "task_retainer"]


class _TaskLoss(nn.Module):
    """TinyVLA's flow-matching loss with the task batch's ``noise`` and ``time`` (``train_vla`` draws
    them for the global batch), as a module: what the Retainer calls, through DDP under torchrun."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> Tensor:
        return self.model.loss(batch, noise=batch["noise"], time=batch["time"])


def _task_loss(module: nn.Module, batch: dict) -> Tensor:
    return module(batch)


def on_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device`` (``sample_index`` stays: it seeds per-sample noise on the CPU)."""
    return {k: v if k == "sample_index" else v.to(device) for k, v in batch.items()}


def ranks() -> Dist:
    """This process's place in the group ``runs.distributed()`` joined (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), backend=dist.get_backend())


def check_split(world: int, **sizes: int) -> None:
    """Global batches split evenly over the ranks (equal slices keep the means exact)."""
    for name, n in sizes.items():
        if n % world:
            raise ValueError(
                f"RetainTrainConfig.{name}={n} does not split over {world} ranks (WORLD_SIZE); use a multiple of "
                f"{world}: it is the global batch, each rank trains on {name} / {world}"
            )


def _no_forward_buffer_sync() -> dict:
    """DDP's switch for not broadcasting buffers at each forward (the retainer's passes run under
    ``no_sync`` and the ranks' buffers are equal): ``forward_sync_buffers`` where torch has it (2.13
    deprecates ``broadcast_buffers``), else ``broadcast_buffers`` (torch 2.10)."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def task_retainer(model: nn.Module, anchor_set: AnchorSet, retention: RetentionConfig) -> Retainer:
    """The Retainer of ``model``'s task loss; under torchrun it sees the loss through DDP, so that it
    averages both gradients and L_ret over the ranks."""
    d, device = ranks(), next(model.parameters()).device
    loss: nn.Module = _TaskLoss(model)
    if d.active:
        if d.backend == "nccl" and device.type != "cuda":
            raise ValueError(
                f"the process group uses nccl (CUDA) but the model is on {device}; move it to cuda:LOCAL_RANK"
            )
        ids = [device.index] if device.type == "cuda" else None
        loss = nn.parallel.DistributedDataParallel(loss, device_ids=ids, **_no_forward_buffer_sync())
    return Retainer(loss, _task_loss, anchor_set.student, retention)
