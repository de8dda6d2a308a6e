"""`policylens train vla` then `policylens sim eval` on the checkpoint it wrote."""

import json

from typer.testing import CliRunner

from policylens.cli.main import app

runner = CliRunner()


def test_train_vla_then_eval_in_closed_loop(tmp_path):
    out = tmp_path / "vla"
    args = ["train", "vla", "--out", str(out), "--episodes", "2", "--steps", "2", "--batch-size", "2"]
    result = runner.invoke(app, [*args, "--image-size", "28"])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["type"] == "tiny_vla"
    assert config["image_size"] == 28
    result = runner.invoke(app, ["sim", "eval", "--policy", str(out), "--episodes", "1"])
    assert result.exit_code == 0, result.output
    assert "success" in result.output
    assert "(0/1)" in result.output or "(1/1)" in result.output


def test_train_diffusion_then_eval_without_rendering(tmp_path):
    out = tmp_path / "dp"
    args = ["train", "diffusion", "--out", str(out), "--episodes", "2", "--steps", "2", "--batch-size", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["type"] == "tiny_diffusion_policy"
    result = runner.invoke(app, ["sim", "eval", "--policy", str(out), "--episodes", "1", "--no-render"])
    assert result.exit_code == 0, result.output
    assert "on reach: success" in result.output


def test_train_refuses_another_run_before_making_episodes_then_resumes(tmp_path):
    out = tmp_path / "dp"
    args = ["train", "diffusion", "--out", str(out), "--episodes", "2", "--steps", "2", "--batch-size", "4"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--lr", "1e-3"])
    assert result.exit_code == 2 and "train.lr 0.0005 there, 0.001 now" in result.stderr
    assert "pass --overwrite" in result.stderr and len(result.stderr.splitlines()) == 1
    result = runner.invoke(app, [*args[:-4], "--steps", "3", "--batch-size", "4"])  # the same run, longer
    assert result.exit_code == 0 and "trained to step 3" in result.output
    result = runner.invoke(app, [*args, "--lr", "1e-3", "--overwrite"])
    assert result.exit_code == 0 and "trained to step 2" in result.output
    assert json.loads((out / "run.json").read_text())["settings"]["train"]["lr"] == 1e-3
    vla = ["train", "vla", "--out", str(out), "--episodes", "1", "--steps", "1", "--image-size", "28"]
    result = runner.invoke(app, vla)  # a diffusion run's directory is not a TinyVLA run's
    assert result.exit_code == 2 and "records another run" in result.stderr
