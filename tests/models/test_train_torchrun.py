"""train_vla and train_diffusion_policy as 2 torchrun ranks (gloo, CPU): each rank trains on its half
of the global batch and the gradients are averaged, so the weights after 4 steps are one process's on
that batch (max abs difference below TOL, float rounding), replay rows included (a quarter of every
global batch from replay episodes); without the averaging they are not. A SIGINT
that reaches one rank stops every rank after the same step, rank 0 saves, and the rerun on the same
directory resumes the uninterrupted run bit for bit (dropout included: each rank draws its masks from
its own stream, which the shared saved state does not hold). Rank 0 alone writes and shows progress.
The command under torchrun: Ctrl-C (every process signalled, then torchrun forwards it) saves once,
and the same command with more steps resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _dp_runs import CUT, STEPS, run_diffusion, run_vla
from safetensors.torch import load_file

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.models._train_vla import flow_loss, flow_noise
from policylens.runs import stop_on_signal, trained_steps

WORKER = Path(__file__).with_name("_dp_worker.py")
TOL = 1e-5  # measured on this machine: 2.5e-6 (TinyVLA), 1.8e-6 (diffusion); without averaging 1.2e-3, 5.5e-3
LOOPS = ("vla", "diffusion")


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
ENV = {"OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "60"}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    cmd = [*TORCHRUN, "--log-dir", str(out / "logs"), "--redirects", "3", str(WORKER), str(out)]
    env = {**os.environ, **ENV}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    logs = {int(p.parent.name): p.read_text() for p in (out / "logs").rglob("stderr.log")}
    assert run.returncode == 0, run.stderr[-2000:] + "".join(v[-2000:] for v in logs.values())
    return out, json.loads((out / "seen.json").read_text()), logs


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    losses = run_vla(out / "vla")
    run_vla(out / "vla_replay", replay=True)
    run_diffusion(out / "diffusion")
    return out, losses


def weights(directory: Path) -> dict[str, torch.Tensor]:
    """The trained weights in the training state (the diffusion checkpoint holds the EMA)."""
    state = load_file(str(directory / "train_state.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("model.") and v.is_floating_point()}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("loop", LOOPS)
def test_two_ranks_train_as_one_process_on_the_global_batch(ranks, one_process, loop):
    (out, seen, _), (one, one_losses) = ranks, one_process
    assert max_diff(weights(out / f"{loop}_whole"), weights(one / loop)) < TOL
    if loop == "vla":  # the losses returned (and logged) are the global batch's, on every rank
        got = seen["runs"]["vla_whole"]
        assert got[0] == got[1]
        np.testing.assert_allclose(got[0]["losses"], one_losses, rtol=1e-5)


def test_two_ranks_mix_replay_rows_as_one_process(ranks, one_process):
    (out, _, _), (one, _) = ranks, one_process
    assert max_diff(weights(out / "vla_replay"), weights(one / "vla_replay")) < TOL
    assert max_diff(weights(one / "vla_replay"), weights(one / "vla")) > 10 * TOL  # the replay rows were trained on


@pytest.mark.parametrize("loop", LOOPS)
def test_without_averaged_gradients_the_weights_differ(ranks, one_process, loop):
    out, _, _ = ranks
    assert max_diff(weights(out / f"{loop}_nosync"), weights(one_process[0] / loop)) > 10 * TOL


@pytest.mark.parametrize("loop", LOOPS)
def test_a_signal_on_one_rank_stops_all_and_the_rerun_resumes_the_same_run(ranks, loop):
    out, seen, _ = ranks
    assert seen["runs"][f"{loop}_cut"] == [{"interrupted": [2, CUT]}] * 2  # SIGINT, after step 2, on both ranks
    whole = out / (f"{loop}_whole_dropout" if loop == "diffusion" else f"{loop}_whole")
    cut = load_file(str(out / f"{loop}_cut" / "train_state.safetensors"))
    full = load_file(str(whole / "train_state.safetensors"))
    assert cut.keys() == full.keys()
    assert [k for k in cut if not torch.equal(cut[k], full[k])] == []  # weights, optimiser, random states
    assert json.loads((out / f"{loop}_cut" / "train_state.json").read_text())["step"] == STEPS
    if loop == "vla":
        assert seen["runs"]["vla_resumed"][0]["losses"] == seen["runs"]["vla_whole"][0]["losses"][CUT:]


def test_rank_0_alone_writes_and_shows_progress(ranks):
    _, seen, logs = ranks
    runs = 10  # train calls that claim their directory and open TensorBoard
    assert seen["calls"][1] == {}
    assert seen["calls"][0] == {"claim_run_dir": runs, "SummaryWriter": runs, "save_train_state": runs,
                                "save_checkpoint": 4}  # fmt: skip
    assert "train TinyVLA" in logs[0] and "train diffusion policy" in logs[0]
    assert "train TinyVLA" not in logs[1] and "train diffusion policy" not in logs[1]


def test_flow_loss_with_drawn_noise_is_tinyvlas_loss():
    """The loop draws the flow noise for the global batch (flow_noise) in TinyVLA.loss's order."""
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, vision_layers=1, layers=1, max_text_tokens=8, chunk_size=3))
    batch = model.example_batch(batch_size=3, with_action=True)
    torch.manual_seed(7)
    expected, after = model.loss(batch), torch.get_rng_state()
    torch.manual_seed(7)
    got = flow_loss(model, {**batch, **flow_noise(model, 3)})
    assert torch.equal(got, expected) and torch.equal(torch.get_rng_state(), after)


def test_without_escalation_a_second_signal_keeps_the_flag():
    """Under torchrun a Ctrl-C reaches a worker twice (terminal, then torchrun): the loop still saves."""
    with stop_on_signal(escalate=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGINT


def test_ctrl_c_under_torchrun_saves_once_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [*TORCHRUN, "-m", "policylens.cli.main", "train", "diffusion", "--episodes", "2", "--batch-size", "4"]
    cmd += ["--save-every", "1", "--out", str(out)]
    env = {**os.environ, **ENV}
    first = subprocess.Popen([*cmd, "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "train_state.json").exists():  # a step is done: training runs
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in a terminal: torchrun and both workers
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    step = trained_steps(out)
    assert stdout.count("torch threads: 1") == 1
    assert stderr.count("interrupted: SIGINT at step") == 1, stderr[-3000:]  # rank 0 says it
    assert f"interrupted: SIGINT at step {step}: state saved in {out}/train_state.*" in stderr
    second = subprocess.run([*cmd, "--steps", str(step + 2)], capture_output=True, text=True, env=env, timeout=240,
                            check=False)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count(f"trained to step {step + 2}; checkpoint in {out}") == 1
    assert trained_steps(out) == step + 2 and (out / "model.safetensors").is_file()


def test_gradients_are_averaged_as_the_global_batchs_where_some_ranks_have_none(ranks):
    """``a``: both ranks' mean; ``b``: only rank 1 reached it, the others count as zeros; ``c``: none."""
    _, seen, _ = ranks
    grads = {"a": [[1.0, 2.0], [2.0, 4.0]], "b": [None, [6.0]]}  # what each rank computed
    sizes = {"a": 2, "b": 1}
    expected = {}
    for name, per_rank in grads.items():
        rows = [g if g is not None else [0.0] * sizes[name] for g in per_rank]
        expected[name] = [sum(r[i] for r in rows) / len(rows) for i in range(sizes[name])]
    expected["c"] = None
    assert seen["averaged"] == [expected, expected]


def test_batches_that_do_not_split_over_the_ranks_are_refused(monkeypatch):
    from typer.testing import CliRunner

    from policylens.cli.main import app
    from policylens.models._data_parallel import check_device, check_split
    from policylens.runs import Dist

    with pytest.raises(ValueError, match=r"VLATrainConfig.batch_size=5 does not split over 2 ranks .*multiple of 2"):
        check_split(Dist(0, 2), **{"VLATrainConfig.batch_size": 5})
    check_split(Dist(1, 2), batch_size=4)
    with pytest.raises(ValueError, match=r"uses nccl \(CUDA\) but the model is on cpu; move it to cuda:LOCAL_RANK"):
        check_device(Dist(0, 2, backend="nccl"), torch.device("cpu"))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    runner = CliRunner()
    for args, what in (
        (["train", "vla", "--batch-size", "5"], "--batch-size 5"),
        (["train", "diffusion", "--batch-size", "3"], "--batch-size 3"),
        (["retain", "train", "--anchors", "a", "--out", "o", "--anchor-batch-size", "3"], "--anchor-batch-size 3"),
    ):
        result = runner.invoke(app, args)  # refused before the process group or any episode
        assert result.exit_code == 2, result.output
        assert f"error: {what}: the global batch must split evenly over the 2 ranks; use a multiple of 2" in (
            result.output
        )


def test_ranks_with_other_episodes_are_named():
    from policylens.models._data_parallel import fingerprint, same_everywhere
    from policylens.runs import Dist

    class TwoRanks(Dist):
        def all_gather(self, obj):
            return [obj, fingerprint(np.zeros(3))]

    same_everywhere(Dist(0, 1), "episodes", "x", "fix")  # one process: nothing to compare
    mine = fingerprint(np.ones(3), "reach the red cube")
    assert mine == fingerprint(np.ones(3), "reach the red cube")
    assert mine != fingerprint(np.ones(3), "reach the blue cube")
    assert fingerprint(np.ones(3)) != fingerprint(np.ones(3, np.float32))  # the dtype counts
    with pytest.raises(ValueError, match=r"rank 1 of 2 has other episodes than rank 0 .*; make the same ones"):
        same_everywhere(TwoRanks(0, 2), "episodes", mine, "make the same ones")
