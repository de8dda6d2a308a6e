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


def test_train_vla_fine_tunes_from_a_checkpoint_on_every_target_episodes(tmp_path):
    import numpy as np
    from safetensors.numpy import load_file

    base = tmp_path / "base"
    args = ["train", "vla", "--episodes", "2", "--steps", "2", "--batch-size", "2", "--image-size", "28"]
    assert runner.invoke(app, [*args, "--out", str(base)]).exit_code == 0
    out = tmp_path / "ft"
    result = runner.invoke(app, [*args, "--out", str(out), "--init", str(base), "--every-target", "--lr", "1e-2"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())["settings"]
    assert run["data"]["init"] == str(base) and run["data"]["every_target"] is True
    assert run["train"]["fit_normalization"] is False
    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    stats = [k for k in before if "mean" in k or "std" in k]
    assert stats and all(np.array_equal(before[k], after[k]) for k in stats)  # normalisation kept
    assert any(not np.array_equal(before[k], after[k]) for k in before if k not in stats)  # weights trained on
    bad = runner.invoke(app, ["train", "vla", "--out", str(tmp_path / "x"), "--init", str(base)])
    assert bad.exit_code != 0 and "'image_size': 28" in bad.output and "pass its values" in bad.output
