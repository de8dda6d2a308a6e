"""``policylens attention run``: bad options refused in one line before OUT is written, a corrected
rerun accepted, Ctrl-C says what was kept (exit 130) and the same command resumes, --overwrite."""

import pytest
from typer.testing import CliRunner

from policylens.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("attn_cli")
    generate_episodes("reach", 2, root / "eps", seed=0, fmt="droid", image_size=56, progress=False)
    return root / "eps"


def attention(droid, out, *extra):
    args = ["attention", "run", "--episodes", str(droid), "--out", str(out), "--every", "4", "--no-heads"]
    return runner.invoke(app, [*args, "--no-videos", "--threads", "1", *extra], env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--layers", "7"), "layers=[7] (prefix phase)"),
        (("--layers", "1,1"), "--layers=(1, 1): expected layer indices"),
        (("--layers", "x"), "--layers='x': expected comma-separated integers"),
        (("--phases", "prefix,action"), "--phases='prefix,action': expected comma-separated phases from prefix"),
        (("--step", "first"), "--step='first': expected mean | last or a flow step index"),
        (("--step", "-11"), "step=-11: the policy samples actions in 10 flow steps"),
        (("--keyframes", "100,200"), "keyframes=[100, 200]: episode"),
        (("--camera-map", "varied_camera_1"), "camera_map='varied_camera_1'"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_out_exists(droid, tmp_path, extra, says):
    result = attention(droid, tmp_path / "out", *extra)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_mode_choices_come_from_the_run(droid, tmp_path):
    result = attention(droid, tmp_path / "out", "--mode", "global")
    assert result.exit_code == 2 and "'global' is not one of 'minmax', 'log'" in result.output
    assert not (tmp_path / "out").exists()


def test_a_corrected_rerun_is_accepted_and_overwrite_replaces(droid, tmp_path):
    out = tmp_path / "out"
    assert attention(droid, out, "--layers", "9").exit_code == 2
    result = attention(droid, out, "--layers", "1")
    assert result.exit_code == 0, result.output
    assert "torch threads: 1" in result.stdout and f"2 episodes, 4 keyframes -> {out}" in result.stdout
    result = attention(droid, out, "--layers", "2")
    assert result.exit_code == 2 and "layers differ" in result.stderr and "--overwrite" in result.stderr
    result = attention(droid, out, "--layers", "2", "--overwrite")
    assert result.exit_code == 0, result.output
    assert '"layers": [\n    2\n  ]' in (out / "run.json").read_text()


def test_ctrl_c_says_what_was_kept_and_the_same_command_resumes(droid, tmp_path, monkeypatch):
    from policylens.attention import _pipeline

    real, calls = _pipeline._episode, []

    def interrupted_second(*args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(_pipeline, "_episode", interrupted_second)
    out = tmp_path / "out"
    result = attention(droid, out, "--layers", "1")
    assert result.exit_code == 130, result.output
    assert f"interrupted: 1 of 2 episodes done in {out}; rerun the same command to resume" in result.stderr
    result = attention(droid, out, "--layers", "1")
    assert result.exit_code == 0, result.output
    assert calls == [0, 1, 0, 1] and len(list(out.glob("*/*/*/done.json"))) == 2
