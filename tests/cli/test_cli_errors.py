"""Known errors print one line on stderr and exit 2; --debug / POLICYLENS_DEBUG show the traceback;
unknown errors keep their traceback."""

import json
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from policylens.accel import Calibration
from policylens.cli._app import new_app
from policylens.cli._errors import CommandError, format_known_error, is_known_error, register_known_error
from policylens.cli.main import app
from zoo import tiny_diffusion_policy

runner = CliRunner()


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_bad_tap_name_says_how_many_layers(tmp_path):
    args = ["cache", "build", "--layer", "99", "--dataset", "synthetic:2", "--out", str(tmp_path / "s")]
    line = _one_line(runner.invoke(app, args))
    assert "'llm.layers.99.out' does not exist" in line and "llm has 4 layers: indices 0..3 (or -4..-1)" in line


def test_missing_checkpoint_dir(tmp_path):
    line = _one_line(runner.invoke(app, ["accel", "eval", "--policy", str(tmp_path / "nothing")]))
    assert f"{tmp_path / 'nothing' / 'config.json'} does not exist" in line
    line = _one_line(runner.invoke(app, ["taps", str(tmp_path / "nothing")]))
    assert "is neither a built-in policy" in line


def test_corrupted_calibration_json(tmp_path):
    tiny_diffusion_policy(steps=4).save_pretrained(tmp_path / "pol")
    cal = tmp_path / "cal.json"
    cal.write_text('{"format": "policylens-bac-calibration", ')
    args = ["accel", "eval", "--policy", str(tmp_path / "pol"), "--calibration", str(cal), "--mode", "optimal"]
    line = _one_line(runner.invoke(app, args))
    assert f"{cal} is not valid JSON" in line and "policylens accel calibrate" in line


def test_calibration_missing_a_field_names_it(tmp_path):
    cal = tmp_path / "cal.json"
    policy = tiny_diffusion_policy(steps=4)
    policy.save_pretrained(tmp_path / "pol")
    data = _calibration(policy).to_dict()
    del data["num_steps"]
    cal.write_text(json.dumps(data))
    args = ["accel", "eval", "--policy", str(tmp_path / "pol"), "--calibration", str(cal), "--mode", "optimal"]
    assert f"--calibration {cal}: field 'num_steps' is missing" in _one_line(runner.invoke(app, args))


def test_calibration_of_other_weights(tmp_path):
    tiny_diffusion_policy(seed=1, steps=4).save_pretrained(tmp_path / "pol")
    _calibration(tiny_diffusion_policy(seed=0, steps=4)).save(tmp_path / "cal.json")
    args = ["accel", "eval", "--policy", str(tmp_path / "pol"), "--calibration", str(tmp_path / "cal.json")]
    line = _one_line(runner.invoke(app, [*args, "--calls", "1", "--mode", "optimal"]))
    assert "the schedule was made for other weights; re-calibrate on this checkpoint" in line


def test_corrupted_checkpoint_config_names_the_file(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{not json")
    line = _one_line(runner.invoke(app, ["taps", str(tmp_path / "ckpt")]))
    assert f"{tmp_path / 'ckpt' / 'config.json'} is not valid JSON" in line  # the file, then the fix
    assert "re-copy or re-export it" in line


def test_debug_flag_and_env_show_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "taps", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and isinstance(result.exception, FileNotFoundError)
    result = runner.invoke(app, ["taps", str(tmp_path / "nothing")], env={"POLICYLENS_DEBUG": "1"})
    assert result.exit_code == 1 and isinstance(result.exception, FileNotFoundError)


def test_real_process_one_line_then_traceback_with_debug(tmp_path):
    cmd = [sys.executable, "-m", "policylens.cli.main", "taps", str(tmp_path / "nothing")]
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("POLICYLENS_DEBUG", None)
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and len(plain.stderr.splitlines()) == 1, plain.stderr
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
    assert len(debug.stderr.splitlines()) > 5


def _calibration(policy) -> Calibration:
    from policylens.accel import calibrate, random_observations

    return calibrate(policy, random_observations(policy, 2), num_updates=2, batch_size=2, num_seeds=1)


def test_bugs_keep_their_traceback(tmp_path):
    """A KeyError from a plain dict lookup in policylens code is a bug, not a message for the user."""
    data = _calibration(tiny_diffusion_policy(steps=4)).to_dict()
    del data["num_steps"]
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(KeyError) as implicit:
        Calibration.load(tmp_path / "c.json")
    assert not is_known_error(implicit.value)
    with pytest.raises(FileNotFoundError) as explicit:
        Calibration.load(tmp_path / "absent.json")
    assert is_known_error(explicit.value)
    assert not is_known_error(ValueError("raised outside policylens"))

    toy = new_app("toy")

    @toy.command()
    def boom() -> None:
        raise RuntimeError("a real bug")

    @toy.command()
    def refuse() -> None:
        raise CommandError("--x 3 is too big; pass at most 2")

    result = runner.invoke(toy, ["boom"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert (
        _one_line(runner.invoke(toy, ["refuse"]))
        == "error: --x 3 is too big; pass at most 2 (--debug shows the traceback)"
    )


def test_registry_takes_classes_and_names(monkeypatch):
    from policylens.cli import _errors

    monkeypatch.setattr(_errors, "_REGISTRY", list(_errors._REGISTRY))  # registrations end with the test

    class PluginError(Exception):
        pass

    toy = new_app("toy")

    @toy.command()
    def plugin() -> None:
        raise PluginError("plugin.yaml field 'rate' must be > 0; set rate: 10")

    @toy.command()
    def other() -> None:
        raise PluginError("x")

    assert runner.invoke(toy, ["plugin"]).exit_code == 1
    register_known_error(PluginError)
    assert "plugin.yaml field 'rate'" in _one_line(runner.invoke(toy, ["plugin"]))
    register_known_error("policylens.no_such_module:SomeError")  # never imported: ignored, no crash
    with pytest.raises(TypeError, match="module:QualName"):
        register_known_error("NoColon")


def test_multiline_and_key_error_messages_fold_to_one_line():
    assert format_known_error(KeyError("tap 'x' is unknown")) == "error: tap 'x' is unknown"
    assert format_known_error(TypeError("no adapter. Supported:\n  A\n  B")) == "error: no adapter. Supported: A B"


def test_sigint_is_not_swallowed():
    """KeyboardInterrupt passes through the error handler (typer exits 130)."""
    toy = new_app("toy")

    @toy.command()
    def stop() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    @toy.command()
    def other() -> None:
        pass

    assert runner.invoke(toy, ["stop"]).exit_code == 130
