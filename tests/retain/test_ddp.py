"""Two gloo processes on CPU end with the same parameters and λ after 5 retention steps as one
process on the same global batch (both passes under no_sync, both gradients all-reduced before
the projection, L_ret all-reduced before the λ update)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).parent / "_ddp_worker.py"


def _run(world: int, tmp: Path) -> dict:
    out, init = tmp / f"world{world}.json", tmp / f"init{world}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(init), str(out)], env=env)
        for r in range(world)
    ]
    assert all(p.wait(timeout=240) == 0 for p in procs)
    return json.loads(out.read_text())


def test_two_gloo_ranks_match_one_process_on_the_global_batch(tmp_path):
    one, two = _run(1, tmp_path), _run(2, tmp_path)
    assert one["lam"] > 0 and abs(one["lam"] - two["lam"]) < 1e-5
    for name, value in one["params"].items():
        np.testing.assert_allclose(two["params"][name], value, rtol=1e-4, atol=1e-6)
