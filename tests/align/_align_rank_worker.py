"""One torchrun rank of ``align train`` for tests/align/test_align_torchrun.py:
``python _align_rank_worker.py MODE STORES OUT key=value ...`` (AlignTrainConfig fields, JSON values).
MODE ``nosync``: DDP's wrapper taken out (each rank steps on the gradient of its own share);
``signal``: rank 1 sends itself SIGINT after its third step, and each rank prints where it stopped."""

import json
import os
import signal
import sys
from pathlib import Path

import policylens.align._loop as loop
from policylens.align import AlignTrainConfig, align_step, train_alignment
from policylens.runs import TrainingInterrupted, env_world

mode, stores, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
config = AlignTrainConfig(**{k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[4:])}, progress=False)
rank, calls = env_world()[0], []
if mode == "nosync":
    loop._wrap = lambda model, d: model


def step(*args):
    logs = align_step(*args)
    calls.append(1)
    if mode == "signal" and rank == 1 and len(calls) == 3:
        os.kill(os.getpid(), signal.SIGINT)  # the ranks agree to stop after this step
    return logs


try:
    train_alignment(stores / "points", [stores / "dinov2", stores / "siglip"], out, config, step=step)
except TrainingInterrupted as exc:
    print(f"rank {rank} stopped at step {exc.step}: {exc}")
