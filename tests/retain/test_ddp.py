"""Two gloo processes on CPU end with the same parameters and λ after 5 retention steps as one
process on the same global batch (both passes under no_sync, both gradients all-reduced before
the projection, L_ret all-reduced before the λ update)."""

from pathlib import Path

import numpy as np

from gloo_ranks import run_ranks

WORKER = Path(__file__).parent / "_ddp_worker.py"


def _run(world: int, tmp: Path) -> dict:
    return run_ranks(WORKER, world, tmp)


def test_two_gloo_ranks_match_one_process_on_the_global_batch(tmp_path):
    one, two = _run(1, tmp_path), _run(2, tmp_path)
    assert one["lam"] > 0 and abs(one["lam"] - two["lam"]) < 1e-5
    for name, value in one["params"].items():
        np.testing.assert_allclose(two["params"][name], value, rtol=1e-4, atol=1e-6)
