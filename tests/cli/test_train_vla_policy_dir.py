"""``train vla --policy DIR`` on a saved transformers pi0: plain fine-tuning through ``retain.policy_train`` on a
LeRobot dataset (the weights move, OUT/policy reloads, the run records no anchors and method plain); options it
cannot honour and a missing --dataset / --out are refused in one line before any training."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import pi_zoo
from policylens.cli.main import app
from policylens.models import NativePIPolicy, load_model

runner = CliRunner()
PI_MAP = "varied_camera_1=base_0_rgb,hand_camera=left_wrist_0_rgb,varied_camera_2=right_wrist_0_rgb"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("train_vla_dir")
    generate_episodes("reach", 1, root / "reach", seed=0, fmt="lerobot", image_size=32, progress=False)
    model, proc = pi_zoo.pair("pi0")
    proc.actions_mean, proc.actions_std = np.linspace(-0.2, 0.3, 7).tolist(), np.linspace(0.5, 2.0, 7).tolist()
    model.save_pretrained(root / "pi0")
    proc.save_pretrained(root / "pi0")
    return root


def _args(data, *extra, steps: int = 2):
    return ["train", "vla", "--policy", str(data / "pi0"), "--steps", str(steps), "--batch-size", "2", "--threads",
            "1", "--camera-map", PI_MAP, *extra]  # fmt: skip


def test_plain_fine_tuning_writes_a_policy_that_reloads(data, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, _args(data, "--dataset", f"lerobot:{data / 'reach'}", "--out", str(out), "--lr", "1e-3"))
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output and "trained 2 steps (plain fine-tuning)" in res.output
    summary = json.loads((out / "retain.json").read_text())
    assert summary["steps_run"] == 2 and summary["method"] == "plain"
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["data"]["dataset"] == f"lerobot:{data / 'reach'}" and settings["data"]["anchors"] is None
    assert settings["train"]["lr"] == 1e-3
    tuned, before = load_model(out / "policy"), load_model(data / "pi0")
    assert isinstance(tuned, NativePIPolicy)
    moved = [
        n for (n, a), b in zip(tuned.named_parameters(), before.parameters(), strict=True) if not torch.equal(a, b)
    ]
    assert moved  # the two steps changed weights


def test_default_lr_is_policy_train_configs(data, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, _args(data, "--dataset", f"lerobot:{data / 'reach'}", "--out", str(out), steps=1))
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run.json").read_text())["settings"]["train"]["lr"] == 1e-5


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--out", "{t}/run"], "--policy {d}/pi0: pass the task data with --dataset lerobot:PATH | droid:PATH"),
        (["--dataset", "lerobot:{d}/reach"], "pass --out DIR for the fine-tuned run"),
        (["--dataset", "lerobot:{d}/reach", "--out", "{t}/run", "--task", "reach"], "with --task: those build"),
        (["--dataset", "lerobot:{d}/reach", "--out", "{t}/run", "--image-size", "56", "--no-use-state"],
         "with --image-size / --use-state: those build or record a TinyVLA run"),
        (["--dataset", "lerobot:{d}/reach", "--out", "{t}/run", "--camera-map", "top=base_0_rgb"],
         "camera_map names dataset camera 'top'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_before_training(data, tmp_path, extra, says):
    res = runner.invoke(app, _args(data, *[a.replace("{d}", str(data)).replace("{t}", str(tmp_path)) for a in extra]))
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert says.replace("{d}", str(data)) in errors[0], errors[0]
    assert not (tmp_path / "run" / "train_state.json").exists()


def test_a_directory_that_is_no_policy_is_one_line(tmp_path):
    res = runner.invoke(app, ["train", "vla", "--policy", str(tmp_path / "nothing"), "--dataset", "lerobot:x",
                              "--out", str(tmp_path / "run")])  # fmt: skip
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and f"--policy {tmp_path / 'nothing'}" in errors[0], res.output
