"""Run a worker script as ``world`` CPU processes (gloo, file:// rendezvous) for DDP tests:
``python WORKER RANK WORLD INIT_FILE OUT_JSON``; rank 0 writes its results as JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run_ranks(worker: Path, world: int, tmp: Path, timeout: float = 240) -> dict:
    out, init = tmp / f"world{world}.json", tmp / f"init{world}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(worker), str(r), str(world), str(init), str(out)], env=env)
        for r in range(world)
    ]
    assert all(p.wait(timeout=timeout) == 0 for p in procs)
    return json.loads(out.read_text())
