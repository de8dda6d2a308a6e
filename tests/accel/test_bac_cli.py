"""`policylens accel` CLI: calibrate then eval on a tiny saved policy."""

import json

from typer.testing import CliRunner

from policylens.cli._accel import app
from zoo import tiny_diffusion_policy


def test_calibrate_then_eval(tmp_path):
    tiny_diffusion_policy(steps=10).save_pretrained(tmp_path / "pol")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--policy",
            str(tmp_path / "pol"),
            "--out",
            str(tmp_path / "cal.json"),
            "--num-obs",
            "4",
            "--batch-size",
            "2",
            "--num-updates",
            "3",
            "--n-bu",
            "1",
            "--plots",
            str(tmp_path / "plots"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "cal.json").read_text())
    assert data["num_steps"] == 10 and all(len(v) >= 3 for v in data["schedule"].values())
    assert (tmp_path / "plots" / "schedule.png").is_file()
    res = runner.invoke(
        app,
        [
            "eval",
            "--policy",
            str(tmp_path / "pol"),
            "--calibration",
            str(tmp_path / "cal.json"),
            "--calls",
            "2",
            "--num-updates",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "optimal" in res.output and "uniform" in res.output and "1.00x" in res.output


def test_calibrate_interrupted_says_nothing_was_kept(tmp_path, monkeypatch):
    import policylens.accel

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(policylens.accel, "calibrate", stop)
    tiny_diffusion_policy(steps=10).save_pretrained(tmp_path / "pol")
    (tmp_path / "cal.json").write_text('{"earlier": true}')
    args = ["calibrate", "--policy", str(tmp_path / "pol"), "--out", str(tmp_path / "cal.json"), "--num-obs", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 130, res.output
    assert "nothing kept" in res.output and "rerun the same command" in res.output
    assert (tmp_path / "cal.json").read_text() == '{"earlier": true}'  # the file there is left as it was
