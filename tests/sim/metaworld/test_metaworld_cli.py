"""`policylens sim generate|eval --suite metaworld` and `policylens train diffusion --suite metaworld`."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("metaworld")

from policylens.cli.main import app
from policylens.data.lerobot import open_dataset
from policylens.models import load_policy

runner = CliRunner()


def test_unknown_task_lists_the_known_ones():
    result = runner.invoke(app, ["sim", "eval", "--suite", "metaworld", "--task", "pick-place", "--episodes", "1"])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "--task='pick-place' is not a MetaWorld task. Did you mean pick-place-v3" in result.stderr
    assert "Known tasks: assembly-v3, basketball-v3" in result.stderr
    result = runner.invoke(app, ["sim", "eval", "--suite", "metaworld"])
    assert result.exit_code == 2 and "--task is required with --suite metaworld" in result.stderr


def test_expert_eval_prints_a_table_per_task_and_the_mean():
    args = ["sim", "eval", "--suite", "metaworld", "--task", "reach-v3,push-v3", "--episodes", "2", "--batch", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["task", "success", "rate", "95%", "interval", "mean", "steps", "seconds"]
    assert lines[1].startswith("reach-v3") and "2/2  100.0%  [34.2%, 100.0%]" in lines[1]
    assert lines[2].startswith("push-v3") and lines[3].startswith("mean of 2 tasks")


def test_generate_writes_a_lerobot_dataset(tmp_path):
    out = tmp_path / "mw"
    args = ["sim", "generate", "--suite", "metaworld", "--task", "reach-v3", "--episodes", "2"]
    result = runner.invoke(app, [*args, "--format", "lerobot", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 MetaWorld reach-v3 episodes (state only) as lerobot" in result.output
    assert len(open_dataset(out)) == 2
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--policy", "tiny_vla"])
    assert result.exit_code == 2 and "records the expert only" in result.stderr
    result = runner.invoke(app, ["sim", "generate", "--out", str(tmp_path / "y"), "--cameras", "corner"])
    assert result.exit_code == 2 and "--cameras is for --suite metaworld" in result.stderr
    result = runner.invoke(app, ["sim", "eval", "--task", "reach", "--batch", "2", "--episodes", "3"])  # pybullet
    assert result.exit_code == 0 and "expert on reach: success 100.0% (3/3)" in result.output, result.output


def test_train_then_eval_and_refuse_another_task(tmp_path):
    out = tmp_path / "runs" / "reach-v3"
    args = ["train", "diffusion", "--suite", "metaworld", "--task", "reach-v3", "--out", str(out)]
    small = ["--episodes", "2", "--steps", "2", "--batch-size", "4", "--n-emb", "16", "--n-layer", "1"]
    result = runner.invoke(app, [*args, *small])
    assert result.exit_code == 0, result.output
    assert "trained reach-v3 to step 2" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["suite"] == "metaworld" and config["task"] == "reach-v3" and config["obs_dim"] == 39
    assert load_policy(out).config.task == "reach-v3"
    result = runner.invoke(app, [*args, *small[:-4], "--n-emb", "32", "--n-layer", "1"])  # another model: refused
    assert result.exit_code == 2 and "config.n_emb 16 there, 32 now" in result.stderr
    ev = ["sim", "eval", "--suite", "metaworld", "--episodes", "2", "--batch", "2", "--max-steps", "10"]
    result = runner.invoke(app, [*ev, "--task", "reach-v3", "--policy", str(tmp_path / "runs")])  # DIR/TASK
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'runs'} on reach-v3: success" in result.stdout
    result = runner.invoke(app, [*ev, "--task", "push-v3", "--policy", str(out)])
    assert result.exit_code == 2 and "was trained on MetaWorld task 'reach-v3'" in result.stderr
