"""``accel calibrate`` under torchrun (2 and 3 gloo ranks): the calibration batches split over the ranks,
the weighted similarity sums added over them, and rank 0 alone writes a calibration equal to one
process's (5 observations in batches of 2: the ranks hold 2 + 3 or 2 + 2 + 1 samples, so an average of
the ranks' averages would differ: measured 2.4e-2 / 1.0e-1 on the cosine matrices for 2 / 3 ranks, the
sums added in another order 2.2e-16)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from zoo import tiny_diffusion_policy

ENV = {"OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "60", "COLUMNS": "400"}  # rich wraps at 80 otherwise
ARGS = ["--num-obs", "5", "--batch-size", "2", "--num-updates", "3", "--n-bu", "1"]
ROUNDED = 1.5e-6  # the file keeps 6 decimals: a sum in another order may round the other way


def _calibrate(cmd: list[str], policy, out, plots) -> str:
    args = ["accel", "calibrate", "--policy", str(policy), "--out", str(out), "--plots", str(plots), *ARGS]
    env = {k: v for k, v in os.environ.items() if k != "POLICYLENS_THREADS"}
    run = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, env={**env, **ENV}, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    tiny_diffusion_policy(steps=10).save_pretrained(tmp / "pol")
    stdout = _calibrate([sys.executable, "-m", "policylens.cli.main"], tmp / "pol", tmp / "cal.json", tmp / "plots")
    assert "split over" not in stdout
    return tmp, json.loads((tmp / "cal.json").read_text())


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_write_one_processs_calibration_once(one_process, tmp_path, world):
    tmp, want = one_process
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
    out = tmp_path / "cal.json"
    stdout = _calibrate([*torchrun, "--no-python", "policylens"], tmp / "pol", out, tmp_path / "plots")
    assert stdout.count(f"split over {world} ranks") == 1 and stdout.count("torch threads: 1") == 1, stdout
    assert stdout.count(f"wrote {out}") == 1 and stdout.count("schedule.png") == 1, stdout
    got = json.loads(out.read_text())
    assert got["num_samples"] == want["num_samples"] == 5 and got["num_steps"] == want["num_steps"] == 10
    assert got["schedule"] == want["schedule"] and got["stability"] == want["stability"]
    assert got["stability"]["num_subsets"] == 2  # subsets of batches that lie on different ranks
    assert got["bu_scores"].keys() == want["bu_scores"].keys()
    assert all(got["bu_scores"][k] == pytest.approx(v, rel=1e-9) for k, v in want["bu_scores"].items())
    assert got["matrices"].keys() == want["matrices"].keys() == {"cosine", "l1"}
    for m, mats in want["matrices"].items():
        for name, mat in mats.items():
            assert np.abs(np.asarray(got["matrices"][m][name]) - np.asarray(mat)).max() < ROUNDED, (m, name)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in (tmp / "plots").iterdir())


def test_ranks_with_another_policy_or_other_observations_or_step_counts_are_refused():
    import torch

    from policylens.accel._calibrate import _agree_steps, _check_same_inputs, _fingerprint
    from policylens.runs import Dist

    class Gathered(Dist):  # what all_gather would bring from the other ranks
        def all_gather(self, obj):
            return [obj, *self.others]

    policy, obs = tiny_diffusion_policy(steps=10), torch.zeros(3, 2, 4)
    same = Gathered(0, 2)
    object.__setattr__(same, "others", [_fingerprint(policy, obs.clone())])
    _check_same_inputs(same, policy, obs)
    other = Gathered(0, 3)
    object.__setattr__(other, "others", [_fingerprint(policy, obs), _fingerprint(policy, obs + 1)])
    with pytest.raises(ValueError, match=r"rank 2 of 3 holds another policy or other observations than rank 0"):
        _check_same_inputs(other, policy, obs)
    object.__setattr__(other, "others", [None, 10])  # a rank without a batch takes the others' count
    assert _agree_steps(other, 10) == 10 and _agree_steps(other, None) == 10
    object.__setattr__(other, "others", [12, 10])
    with pytest.raises(ValueError, match=r"the ranks saw different step counts \[10, 12\]"):
        _agree_steps(other, 10)
