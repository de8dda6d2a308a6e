"""One process group for every long command, from torchrun's environment.

``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT ...] policylens <command>``
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each
process. :func:`distributed` reads them, joins the process group (nccl when the rank has a CUDA
device, gloo otherwise), pins the rank's GPU, and leaves the group when the command ends. Without
torchrun it is a no-op (one rank), so a command is written once for both.

A rank that fails takes the others down instead of leaving them waiting in a collective: the group
is created with a timeout (``POLICYLENS_DIST_TIMEOUT`` seconds, default 1800), and an exception
inside the block is reported with the rank that raised it before the group is torn down.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = ["Dist", "distributed", "env_world", "shard"]


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` (``local_rank`` on its node) and its ``device``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, logs and the summary, and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, obj):
        """``obj`` from rank 0 on every rank (a JSON-like value)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def env_world() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it), checked."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (torchrun sets them): {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"environment RANK={rank}, WORLD_SIZE={world}; expected 0 <= RANK < WORLD_SIZE.")
    return rank, world, local


@contextlib.contextmanager
def distributed(device: str | None = None) -> Iterator[Dist]:
    """Join torchrun's process group for the block (no-op in a single process).

    ``device``: ``"cpu"`` forces gloo on the CPU; default: the rank's ``cuda:LOCAL_RANK`` when CUDA
    is there, else the CPU. A group someone else started (tests, notebooks) is used as it is.
    """
    rank, world, local = env_world()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device(device or "cpu")
    if world == 1 and not dist.is_initialized():
        yield Dist(device=dev)
        return
    owned = not dist.is_initialized()
    backend = "nccl" if use_cuda else "gloo"
    if owned:
        if use_cuda:
            torch.cuda.set_device(dev)
        timeout = dt.timedelta(seconds=float(os.environ.get("POLICYLENS_DIST_TIMEOUT", "1800")))
        dist.init_process_group(backend, timeout=timeout)
    else:
        backend = dist.get_backend()
        rank, world = dist.get_rank(), dist.get_world_size()
    try:
        yield Dist(rank, world, local, dev, backend)
    except BaseException as exc:
        if world > 1 and not isinstance(exc, SystemExit | KeyboardInterrupt):
            print(f"policylens: rank {rank} of {world} stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
    else:
        if owned:  # every rank done, and DDP wrappers freed while their group still exists
            gc.collect()
            dist.barrier()
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def shard(items: Sequence, rank: int, world: int) -> list:
    """Rank ``rank``'s contiguous block of ``items`` (blocks differ in size by at most one; order kept)."""
    n = len(items)
    start, stop = rank * n // world, (rank + 1) * n // world
    return list(items[start:stop])
