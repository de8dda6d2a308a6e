"""retain_train as 2 torchrun ranks (gloo, CPU): each rank takes its half of the global task and anchor
batches, the Retainer sees the loss through DDP and averages both gradients and L_ret over the ranks, so
after 4 steps the weights and λ are one process's (max abs difference below TOL, float rounding); without
that all-reduce they are not. A SIGINT on rank 1 alone stops both after step 2, and the rerun resumes the
uninterrupted run exactly (weights, optimiser, λ, anchor draws). Rank 0 alone writes retain.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _retain_dp_worker import run
from safetensors.torch import load_file

from policylens.anchors import build_cache

WORKER = Path(__file__).with_name("_retain_dp_worker.py")
TOL = 2e-5  # measured on this machine: 6.1e-6 (λ within 1.3e-7 relative); without the all-reduce 5.0e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("retain_ranks")
    build_cache("tiny_vla", "synthetic:8", str(out / "cache"), kind="bridge", batch_size=4, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += ["--log-dir", str(out / "logs"), "--redirects", "3", str(WORKER), str(out / "cache"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "60"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    logs = "".join(p.read_text()[-2000:] for p in (out / "logs").rglob("stderr.log"))
    assert proc.returncode == 0, proc.stderr[-2000:] + logs
    one = run(out / "cache", out / "one")
    return out, json.loads((out / "seen.json").read_text()), one


def weights(directory: Path) -> dict[str, torch.Tensor]:
    state = load_file(str(directory / "train_state.safetensors"))
    return {k: v.double() for k, v in state.items() if k.startswith("model.") and v.is_floating_point()}


def max_diff(a: Path, b: Path) -> float:
    x, y = weights(a), weights(b)
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def test_two_ranks_retain_as_one_process_on_the_global_batches(runs):
    out, seen, one = runs
    assert max_diff(out / "whole", out / "one") < TOL
    got = seen[0]["runs"]["whole"]
    assert got == seen[1]["runs"]["whole"]  # every rank returns the summary
    assert got["lambda_history"] == pytest.approx(one["lambda_history"], rel=1e-5, abs=1e-8)
    assert got["final_loss_act"] == pytest.approx(one["final_loss_act"], rel=1e-5)
    assert json.loads((out / "whole" / "retain.json").read_text()) == got


def test_without_the_all_reduce_the_weights_differ(runs):
    out, _, _ = runs
    assert max_diff(out / "nosync", out / "one") > 5 * TOL


def test_a_signal_on_one_rank_stops_both_and_the_rerun_resumes_the_same_run(runs):
    out, seen, _ = runs
    assert [r["runs"]["interrupted"] for r in seen] == [[2, 2], [2, 2]]  # SIGINT after step 2, on both ranks
    cut, whole = (load_file(str(out / d / "train_state.safetensors")) for d in ("cut", "whole"))
    assert [k for k in whole if not torch.equal(cut[k], whole[k])] == []
    assert seen[0]["runs"]["cut"] == seen[0]["runs"]["whole"]  # λ, its history, the per-step series


def test_rank_0_alone_writes_retain_json(runs):
    _, seen, _ = runs
    assert seen[0]["writes"] == 4 and seen[1]["writes"] == 0  # whole, interrupted, cut, nosync


def test_the_task_loss_with_the_loops_noise_is_tinyvlas_loss():
    """The Retainer's task loss takes the flow noise train_vla draws for the global batch (flow_noise)
    and is then TinyVLA.loss exactly."""
    from policylens.models import TinyVLA, TinyVLAConfig
    from policylens.models._train_vla import flow_noise
    from policylens.retain._data_parallel import _TaskLoss

    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, vision_layers=1, layers=1, max_text_tokens=8, chunk_size=3))
    batch = model.example_batch(batch_size=3, with_action=True)
    torch.manual_seed(7)
    expected = model.loss(batch)
    torch.manual_seed(7)
    assert torch.equal(_TaskLoss(model)({**batch, **flow_noise(model, 3)}), expected)
