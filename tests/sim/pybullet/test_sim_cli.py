"""`policylens sim` commands, run through typer's CliRunner against the sub-app."""

from typer.testing import CliRunner

from policylens.cli._sim import app
from policylens.data.lerobot import open_dataset


def test_generate_and_eval(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    res = runner.invoke(
        app,
        [
            "generate",
            "--task",
            "reach",
            "--episodes",
            "1",
            "--out",
            str(out),
            "--format",
            "lerobot",
            "--image-size",
            "32",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(open_dataset(out)) == 1
    res = runner.invoke(app, ["eval", "--policy", "expert", "--task", "reach", "--episodes", "2"])
    assert res.exit_code == 0, res.output
    assert "100.0% (2/2)" in res.output and "95% CI" in res.output
    res = runner.invoke(app, ["generate", "--out", str(tmp_path / "x"), "--format", "zarr", "--episodes", "1"])
    assert res.exit_code != 0 and "'zarr' is not one of" in res.output + str(res.exception)


def test_generate_records_a_policys_rollouts_on_evaluation_layouts(tmp_path):
    import json

    from policylens.sim.pybullet import ExpertPolicy, generate_episodes

    expert = generate_episodes("reach", 1, tmp_path / "demo", seed=0, image_size=56, progress=False)[0]
    rollout = generate_episodes(
        "reach", 1, tmp_path / "eval", seed=0, image_size=56, progress=False, policy=ExpertPolicy()
    )[0]
    demo_scene = json.loads((expert / "metadata.json").read_text())["scene"]
    eval_scene = json.loads((rollout / "metadata.json").read_text())["scene"]
    assert demo_scene["objects"] != eval_scene["objects"]  # held-out layouts, not the training ones
    assert json.loads((rollout / "metadata.json").read_text())["success"] is True
