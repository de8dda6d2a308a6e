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
