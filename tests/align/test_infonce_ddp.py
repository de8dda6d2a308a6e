"""Two gloo processes on CPU, with unequal shares of a 7-row batch and keys shared across ranks, give
the same InfoNCE loss (mean over ranks), gradients, queue and parameters after two SGD steps as one
process holding the global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).parent / "_gather_worker.py"


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
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    for g1, g2 in zip(one["grads"], two["grads"], strict=True):
        assert set(g1) == set(g2) and "nce.logit_scale" in g1
        for name, value in g1.items():
            assert np.abs(value).max() > 0, name
            np.testing.assert_allclose(g2[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(two["queue"], one["queue"], rtol=1e-5, atol=1e-6)
    for name, value in one["params"].items():
        np.testing.assert_allclose(two["params"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
