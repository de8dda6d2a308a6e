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
