"""Run as 2 CPU ranks under torchrun by test_train_torchrun.py (``python -m torch.distributed.run
--standalone --nproc-per-node 2 _dp_worker.py OUT``): train_vla and train_diffusion_policy, as
_dp_runs.py sets them, into OUT/<loop>_<run>:

- ``whole``: 4 steps (diffusion also ``whole_dropout``, with dropout);
- ``cut``: SIGINT to rank 1 alone during step 2 (every rank stops after it, rank 0 saves), then,
  with every global generator reseeded per rank, the same call resumes to step 4;
- ``nosync``: 4 steps with the gradient averaging taken out of the steps;
- ``replay`` (TinyVLA): 4 steps with a quarter of every global batch from replay episodes.

Rank 0 writes OUT/seen.json: per run, how each rank ended and its losses, per rank how often it
called each writer, and ``average_gradients`` on three parameters: ``a`` with a gradient on both
ranks, ``b`` on rank 1 only, ``c`` on none."""

import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

import numpy as np
import torch
import torch.utils.tensorboard as tb
from _dp_runs import CUT, run_diffusion, run_vla

import policylens.models._data_parallel as dp
import policylens.models._train_vla as tv
import policylens.models.diffusion._train as td
from policylens.models._train_vla import vla_step
from policylens.models.diffusion import diffusion_step
from policylens.runs import TrainingInterrupted, distributed

CALLS: Counter = Counter()


def counted(module, name):
    """Count calls of ``module.name`` (what this rank writes)."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        CALLS[name] += 1
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


for module, name in ((tv, "save_train_state"), (tv, "save_checkpoint"), (td, "save_train_state")):
    counted(module, name)
counted(dp, "claim_run_dir")
counted(tb, "SummaryWriter")


def sigint_on_rank_1(step, rank):
    calls = []

    def wrapped(*args):
        calls.append(1)
        if rank == 1 and len(calls) == CUT:
            os.kill(os.getpid(), signal.SIGINT)
        return step(*args)

    return wrapped


def ended(run, *args, **kwargs) -> dict:
    try:
        losses = run(*args, **kwargs)
    except TrainingInterrupted as exc:
        return {"interrupted": [exc.signum, exc.step]}
    return {"losses": losses}


def without_sync(run, *args, **kwargs) -> dict:
    real = tv.average_gradients, td.average_gradients
    tv.average_gradients = td.average_gradients = lambda params: None
    try:
        return ended(run, *args, **kwargs)
    finally:
        tv.average_gradients, td.average_gradients = real


def averaged(rank: int) -> dict:
    """Gradients (rank + 1) * [1, 2] on ``a`` everywhere, (rank + 1) * [3] on ``b`` on rank 1 only."""
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 1, 3))
    a.grad = (rank + 1) * torch.tensor([1.0, 2.0])
    if rank == 1:
        b.grad = (rank + 1) * torch.tensor([3.0])
    dp.average_gradients([a, b, c])
    return {k: None if p.grad is None else p.grad.tolist() for k, p in zip("abc", (a, b, c), strict=True)}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    seen = {}
    with distributed(device="cpu") as d:
        mine = {
            "vla_whole": ended(run_vla, out / "vla_whole"),
            "vla_cut": ended(run_vla, out / "vla_cut", step=sigint_on_rank_1(vla_step, d.rank)),
        }
        torch.manual_seed(100 + d.rank), np.random.seed(100 + d.rank), random.seed(100 + d.rank)
        mine["vla_resumed"] = ended(run_vla, out / "vla_cut")
        mine["vla_nosync"] = without_sync(run_vla, out / "vla_nosync")
        mine["vla_replay"] = ended(run_vla, out / "vla_replay", replay=True)
        mine["diffusion_whole"] = ended(run_diffusion, out / "diffusion_whole")
        mine["diffusion_whole_dropout"] = ended(run_diffusion, out / "diffusion_whole_dropout", dropout=True)
        cut = sigint_on_rank_1(diffusion_step, d.rank)
        mine["diffusion_cut"] = ended(run_diffusion, out / "diffusion_cut", step=cut, dropout=True)
        torch.manual_seed(200 + d.rank), np.random.seed(200 + d.rank), random.seed(200 + d.rank)
        mine["diffusion_resumed"] = ended(run_diffusion, out / "diffusion_cut", dropout=True)
        mine["diffusion_nosync"] = without_sync(run_diffusion, out / "diffusion_nosync")
        every = d.all_gather({"runs": mine, "calls": dict(CALLS), "averaged": averaged(d.rank)})
        if d.main:
            seen = {"runs": {k: [r["runs"][k] for r in every] for k in mine}, "calls": [r["calls"] for r in every]}
            seen["averaged"] = [r["averaged"] for r in every]
            (out / "seen.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
