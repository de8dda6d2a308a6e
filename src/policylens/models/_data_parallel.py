"""Data parallelism for the reference trainers under torchrun, exact to one process.

Every rank draws the same global batch from the same seeded generators and trains on its own
contiguous slice (:func:`part`); a step averages the gradients over the ranks before it clips and
steps (:func:`average_gradients`, one all-reduce), so the update is the one a single process makes on
the global batch, up to float rounding. Rank 0 writes (``run.json``, the training state, TensorBoard,
the checkpoint) and shows progress; every rank reads the saved state. :func:`current` reads the
process group that ``runs.distributed()`` joined (one rank without one); every helper here is a
no-op in one process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..runs import Dist, check_run_dir, claim_run_dir

__all__ = [
    "agree_stop",
    "average_gradients",
    "check_device",
    "check_split",
    "claim",
    "current",
    "fingerprint",
    "mean_scalars",
    "part",
    "rank_stream",
    "same_everywhere",
    "sync_module",
]


def current() -> Dist:
    """This process's place in the group ``runs.distributed()`` joined (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), backend=dist.get_backend())


def _device(d: Dist) -> torch.device:
    """Where this rank's collectives run: its CUDA device under nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if d.backend == "nccl" else torch.device("cpu")


def check_split(d: Dist, **sizes: int) -> None:
    """Each global batch size must split evenly over the ranks (equal slices keep the mean exact)."""
    for name, n in sizes.items():
        if n % d.world:
            raise ValueError(
                f"{name}={n} does not split over {d.world} ranks (WORLD_SIZE); use a multiple of {d.world}: "
                f"it is the global batch, each rank trains on {name} / {d.world}"
            )


def check_device(d: Dist, device: torch.device) -> None:
    """Under nccl the model must be on this rank's GPU."""
    if d.backend == "nccl" and device.type != "cuda":
        raise ValueError(
            f"the process group uses nccl (CUDA) but the model is on {device}; move it to cuda:LOCAL_RANK "
            "(the device runs.distributed() yields), or join with distributed(device='cpu') to train on CPUs"
        )


def part(d: Dist, n: int) -> slice:
    """This rank's contiguous slice of a global batch of ``n`` (``n`` splits evenly: :func:`check_split`)."""
    size = n // d.world
    return slice(d.rank * size, (d.rank + 1) * size)


def claim(d: Dist, directory: str | Path, settings: Mapping, overwrite: bool) -> None:
    """``runs.claim_run_dir`` for the group: every rank refuses another run's directory itself, then
    rank 0 records (or clears and records) the run, then every rank goes on."""
    if not d.active:
        claim_run_dir(directory, settings, overwrite)
        return
    if not overwrite:
        check_run_dir(directory, settings)
    d.barrier()  # nobody reads while rank 0 writes
    if d.main:
        claim_run_dir(directory, settings, overwrite)
    d.barrier()


def fingerprint(*arrays: object) -> str:
    """sha256 of arrays and strings (their bytes, shapes and dtypes): what ranks compare."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, str):
            h.update(a.encode())
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def same_everywhere(d: Dist, what: str, value: object, fix: str) -> None:
    """Raise on every rank if some rank's ``value`` (JSON-like) is not rank 0's."""
    if not d.active:
        return
    seen = d.all_gather(value)
    other = [r for r, v in enumerate(seen) if v != seen[0]]
    if other:
        raise ValueError(f"rank {other[0]} of {d.world} has other {what} than rank 0 ({seen[other[0]]!r} vs "
                         f"{seen[0]!r}); {fix}")  # fmt: skip


def sync_module(d: Dist, module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (as DDP does when it wraps a model)."""
    if not d.active:
        return
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over the ranks, in place, with one all-reduce (nothing without a process group).

    A parameter that has no gradient on any rank keeps none (as in one process, where no sample of the
    global batch reached it); one with a gradient on some ranks gets their sum / world (the others
    count as zeros: the global batch's mean gradient)."""
    d = current()
    params = [p for p in parameters if p.requires_grad]
    if not d.active or not params:
        return
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    has = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([*grads, has.to(grads[0].dtype)])
    dist.all_reduce(flat)
    flat[: -len(params)] /= d.world
    offset = 0
    for p, reached in zip(params, flat[-len(params) :].tolist(), strict=True):
        n = p.numel()
        if reached:
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


def mean_scalars(d: Dist, scalars: Mapping[str, Tensor | float]) -> dict[str, float]:
    """The step's scalars averaged over the ranks (the global batch's loss), as floats."""
    if not d.active:
        return {k: float(v) for k, v in scalars.items()}
    values = torch.tensor([float(v) for v in scalars.values()], dtype=torch.float64, device=_device(d))
    dist.all_reduce(values)
    return dict(zip(scalars, (values / d.world).tolist(), strict=True))


def agree_stop(d: Dist, signum: int | None) -> int | None:
    """The signal any rank got (the largest number), so that every rank stops after the same step."""
    if not d.active:
        return signum
    flag = torch.tensor([signum or 0], device=_device(d))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


@contextmanager
def rank_stream(d: Dist, seed: int, step: int) -> Iterator[None]:
    """Under a process group the block draws from torch's generator seeded by (``seed``, ``step``,
    rank), e.g. each rank its own dropout masks, and torch's shared generator is left as it was: every
    rank keeps the same random state, the one rank 0 saves and every rank resumes from."""
    if not d.active:
        yield
        return
    cuda = d.backend == "nccl"
    entropy = [seed % 2**32, step, d.rank]
    value = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        torch.default_generator.manual_seed(value)
        if cuda:
            torch.cuda.manual_seed(value)
        yield
