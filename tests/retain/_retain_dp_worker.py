"""Run as 2 CPU ranks under torchrun by test_retain_torchrun.py (``python -m torch.distributed.run
--standalone --nproc-per-node 2 _retain_dp_worker.py CACHE OUT``): retain_train as ``run`` sets it,
into OUT/<run>:

- ``whole``: 4 steps;
- ``cut``: SIGINT to rank 1 alone during step 2 (every rank stops after it, rank 0 saves and writes
  retain.json), then the same call resumes to step 4;
- ``nosync``: 4 steps with the Retainer's all-reduce taken out (gradients and L_ret stay per rank).

Rank 0 writes OUT/seen.json: every rank's summaries and how often it wrote retain.json."""

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

import policylens.retain._train as rt
from policylens.retain import RetainTrainConfig, RetentionConfig, retain_train
from policylens.retain._retainer import Retainer
from policylens.runs import TrainingInterrupted, distributed

WRITES = []


def episodes(n=2, t=6, size=56):
    rng = np.random.default_rng(0)
    cams = ("varied_camera_1", "hand_camera")
    return [
        {
            "images": {c: rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for c in cams},
            "state": rng.normal(size=(t, 7)).astype(np.float32),
            "action": rng.normal(size=(t, 7)).astype(np.float32),
            "instruction": "put the red cube in the tray",
        }
        for _ in range(n)
    ]


def run(cache: Path, out: Path, steps: int = 4) -> dict:
    """The run the test trains in one process too: global task and anchor batches of 4."""
    config = RetainTrainConfig(
        steps=steps, batch_size=4, anchor_batch_size=4, save_every=100, log_every=1, warmup=1, task_stats=True
    )
    return retain_train("tiny_vla", cache, episodes(), out, config, RetentionConfig(epsilon=0.0, lam_lr=1e3))


def interrupted(cache: Path, out: Path, rank: int) -> list:
    """``run`` with SIGINT sent to rank 1 during its second step; how the run ended."""
    real, calls = rt._RetentionStep.__call__, []

    def call(self, *args):
        calls.append(1)
        if rank == 1 and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    rt._RetentionStep.__call__ = call
    try:
        run(cache, out)
    except TrainingInterrupted as exc:
        return [exc.signum, exc.step]
    finally:
        rt._RetentionStep.__call__ = real
    return []


def main(cache: Path, out: Path) -> None:
    torch.set_num_threads(1)
    real_write = rt._write_summary
    rt._write_summary = lambda *a: (WRITES.append(1), real_write(*a))
    with distributed(device="cpu") as d:
        mine = {"whole": run(cache, out / "whole"), "interrupted": interrupted(cache, out / "cut", d.rank)}
        mine["cut"] = run(cache, out / "cut")
        real_reduce = Retainer._all_reduce
        Retainer._all_reduce = lambda self, losses: losses
        try:
            mine["nosync"] = run(cache, out / "nosync")
        finally:
            Retainer._all_reduce = real_reduce
        every = d.all_gather({"runs": mine, "writes": len(WRITES)})
        if d.main:
            (out / "seen.json").write_text(json.dumps(every))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
