"""Two gloo processes on CPU, with unequal shares of a 7-row batch and keys shared across ranks, give
the same InfoNCE loss (mean over ranks), gradients, queue and parameters after two SGD steps as one
process holding the global batch."""

from pathlib import Path

import numpy as np

from gloo_ranks import run_ranks

WORKER = Path(__file__).parent / "_gather_worker.py"


def _run(world: int, tmp: Path) -> dict:
    return run_ranks(WORKER, world, tmp)


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
