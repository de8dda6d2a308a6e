"""``retain_train`` / ``policylens retain train``: the retention step inside train_vla's loop,
TensorBoard scalars, resume restoring λ, and the teacher's normalisation kept."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policylens.anchors import build_cache
from policylens.cli.main import app
from policylens.models import load_model
from policylens.retain import RetainTrainConfig, RetentionConfig, retain_train


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchors") / "cache"
    build_cache("tiny_vla", "synthetic:8", str(root), kind="bridge", batch_size=4, progress=False)
    return root


def _episodes(n=2, t=6, size=112):
    rng = np.random.default_rng(0)
    return [
        {
            "images": {
                c: rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for c in ("varied_camera_1", "hand_camera")
            },
            "state": rng.normal(size=(t, 7)).astype(np.float32),
            "action": rng.normal(size=(t, 7)).astype(np.float32),
            "instruction": "put the red cube in the tray",
        }
        for _ in range(n)
    ]


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run / "tb")).Reload()


def test_resume_restores_lambda_and_the_teacher_normalisation_stays(cache, tmp_path):
    cfg = RetainTrainConfig(
        steps=2, batch_size=2, anchor_batch_size=2, save_every=1, log_every=1, warmup=1, task_stats=False
    )
    retention = RetentionConfig(epsilon=0.0, lam_lr=1e3)
    first = retain_train("tiny_vla", cache, _episodes(), tmp_path / "run", cfg, retention)
    assert first["steps_run"] == 2 and len(first["lambda_history"]) == 2 and first["lambda"] > 0
    saved = json.loads((tmp_path / "run" / "train_state.json").read_text())["extra"]
    assert saved["retainer"]["dual"]["lam"] == pytest.approx(first["lambda"])
    cfg.steps = 4
    second = retain_train("tiny_vla", cache, _episodes(), tmp_path / "run", cfg, retention)
    # the summary describes the whole run, not only the steps of this call
    assert second["steps_run"] == 4 and len(second["lambda_history"]) == 4
    assert second["lambda_history"][:2] == pytest.approx(first["lambda_history"])
    assert second["first_loss_act"] == first["first_loss_act"]
    losses = [e.value for e in _events(tmp_path / "run").Scalars("train/loss")]
    assert len(losses) == 4 and second["final_loss_act"] == pytest.approx(losses[-1])
    assert second["first_loss_act"] == pytest.approx(losses[0])
    series = json.loads((tmp_path / "run" / "train_state.json").read_text())["extra"]["series"]
    assert len(series["loss_act"]) == 4 and len(series["cos_dtheta_ret"]) == 4
    assert second["above_epsilon"] == pytest.approx(np.mean(np.asarray(series["loss_ret"]) > 0.0))
    assert second["task_stats"]["enabled"] is False and second["task_stats"]["far"]["action"]["6"] > 10
    tuned, teacher = load_model(str(tmp_path / "run")), load_model("tiny_vla")
    assert torch.equal(tuned.action_mean, teacher.action_mean) and torch.equal(tuned.state_std, teacher.state_std)
    assert not torch.equal(tuned.action_out.weight, teacher.action_out.weight)
    tags = set(_events(tmp_path / "run").Tags()["scalars"])
    for name in ("loss", "loss_ret", "lam", "cos_act_ret", "projected", "cos_dtheta_ret"):
        assert f"train/{name}" in tags


def test_a_finished_run_reports_itself_and_keeps_its_results(cache, tmp_path):
    cfg = RetainTrainConfig(steps=2, batch_size=2, anchor_batch_size=2, save_every=1, warmup=1, task_stats=False)
    retention = RetentionConfig(epsilon=0.0, lam_lr=1e3)
    run = tmp_path / "run"
    summary = retain_train("tiny_vla", cache, _episodes(), run, cfg, retention)
    text = (run / "retain.json").read_text()
    weights = (run / "model.safetensors").read_bytes()
    lines = []
    again = retain_train("tiny_vla", cache, _episodes(), run, cfg, retention, log=lines.append)
    assert again == summary and (run / "retain.json").read_text() == text
    assert (run / "model.safetensors").read_bytes() == weights
    assert lines == [f"already finished at step 2; results in {run / 'retain.json'}"]
    (run / "retain.json").unlink()  # lost: rebuilt from the saved state, the same summary
    assert retain_train("tiny_vla", cache, _episodes(), run, cfg, retention) == summary
    assert json.loads((run / "retain.json").read_text()) == summary
    assert len(_events(run).Scalars("train/loss")) == 2  # no step was run again


def test_task_statistics_are_taken_and_recorded_and_the_bridge_holds(cache, tmp_path):
    cfg = RetainTrainConfig(steps=1, batch_size=2, anchor_batch_size=2, warmup=1)
    episodes = _episodes()
    for ep in episodes:  # a teacher-like arm (dims 3-5 still), the gripper opening and closing
        ep["state"][:, 3:6] = ep["action"][:, 3:6] = 0.0
        ep["state"][:, :3] = ep["action"][:, :3] = [0.46, 0.0, 0.2]
        ep["action"][:, 6] = np.arange(len(ep["action"])) % 2
    lines = []
    summary = retain_train("tiny_vla", cache, episodes, tmp_path / "run", cfg, RetentionConfig(), log=lines.append)
    assert summary["first_loss_act"] < 10  # ~7e4 with the teacher's gripper std of 0.001
    assert summary["final_loss_ret"] < 1e-6  # the teacher's function, hence its bridge features, unchanged
    record = summary["task_stats"]
    assert record["enabled"] and set(record["adopted"]) == {"action", "state"}
    assert record["adopted"]["action"]["6"]["std"][0] == pytest.approx(1e-3)
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]["data"]
    assert settings["task_stats"] == record
    assert len(lines) == 1 and lines[0].startswith("task data outside the teacher's normalisation")
    tuned = load_model(str(tmp_path / "run"))
    std = np.concatenate([ep["action"] for ep in episodes])[:, 6].std(ddof=1)
    assert float(tuned.action_std[6]) == pytest.approx(std, rel=1e-6)


def test_cli_retain_train_on_simulated_episodes(cache, tmp_path):
    args = ["retain", "train", "--anchors", str(cache), "--out", str(tmp_path / "cli"), "--episodes", "1"]
    args += ["--steps", "2", "--batch-size", "2", "--anchor-batch-size", "2", "--task", "reach"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cli" / "retain.json").read_text())
    assert summary["steps_run"] == 2 and summary["method"] == "craft"
    again = CliRunner().invoke(app, [*args[:-2], "--task", "put_in_tray"])
    assert again.exit_code != 0 and "records another run" in again.output


def test_an_interrupted_run_resumed_sums_up_as_the_uninterrupted_one(cache, tmp_path, monkeypatch):
    import os
    import signal

    from policylens.models import TrainingInterrupted
    from policylens.retain import Retainer

    cfg = RetainTrainConfig(steps=4, batch_size=2, anchor_batch_size=2, save_every=4, log_every=2, warmup=1)
    retention = RetentionConfig(epsilon=0.0, lam_lr=1e3)
    whole = retain_train("tiny_vla", cache, _episodes(), tmp_path / "whole", cfg, retention)
    backward, calls = Retainer.backward, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the loop finishes this step, saves, stops
        return backward(self, *args, **kwargs)

    monkeypatch.setattr(Retainer, "backward", interrupted)
    with pytest.raises(TrainingInterrupted):
        retain_train("tiny_vla", cache, _episodes(), tmp_path / "cut", cfg, retention)
    cut = json.loads((tmp_path / "cut" / "retain.json").read_text())  # the state saved at step 2
    assert cut["steps_run"] == 2 and cut["steps"] == 4 and len(cut["lambda_history"]) == 2
    monkeypatch.setattr(Retainer, "backward", backward)
    resumed = retain_train("tiny_vla", cache, _episodes(), tmp_path / "cut", cfg, retention)
    assert resumed.keys() == whole.keys() and resumed["steps_run"] == 4
    for key, value in whole.items():  # the same anchor rows, batches and noise: the same run
        same = value if isinstance(value, (str, dict)) else pytest.approx(value, rel=1e-5, abs=1e-7)
        assert resumed[key] == same, key
