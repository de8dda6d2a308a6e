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


def test_resume_restores_lambda_and_the_teacher_normalisation_stays(cache, tmp_path):
    cfg = RetainTrainConfig(steps=2, batch_size=2, anchor_batch_size=2, save_every=1, log_every=1, warmup=1)
    retention = RetentionConfig(epsilon=0.0, lam_lr=1e3)
    first = retain_train("tiny_vla", cache, _episodes(), tmp_path / "run", cfg, retention)
    assert first["steps_run"] == 2 and len(first["lambda_history"]) == 2 and first["lambda"] > 0
    saved = json.loads((tmp_path / "run" / "train_state.json").read_text())["extra"]
    assert saved["dual"]["lam"] == pytest.approx(first["lambda"])
    cfg.steps = 4
    second = retain_train("tiny_vla", cache, _episodes(), tmp_path / "run", cfg, retention)
    assert second["steps_run"] == 2 and second["lambda_history"][:2] == pytest.approx(first["lambda_history"])
    tuned, teacher = load_model(str(tmp_path / "run")), load_model("tiny_vla")
    assert torch.equal(tuned.action_mean, teacher.action_mean) and torch.equal(tuned.state_std, teacher.state_std)
    assert not torch.equal(tuned.action_out.weight, teacher.action_out.weight)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("loss", "loss_ret", "lam", "cos_act_ret", "projected", "cos_dtheta_ret"):
        assert f"train/{name}" in tags


def test_cli_retain_train_on_simulated_episodes(cache, tmp_path):
    args = ["retain", "train", "--anchors", str(cache), "--out", str(tmp_path / "cli"), "--episodes", "1"]
    args += ["--steps", "2", "--batch-size", "2", "--anchor-batch-size", "2", "--task", "reach"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cli" / "retain.json").read_text())
    assert summary["steps_run"] == 2 and summary["method"] == "craft"
    again = CliRunner().invoke(app, [*args[:-2], "--task", "put_in_tray"])
    assert again.exit_code != 0 and "records another run" in again.output
