"""`policylens accel eval`: modes are validated first, speed-ups are always against `original`."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from policylens.accel import calibrate, random_observations
from policylens.cli._accel import Mode, eval_modes
from policylens.cli._errors import CommandError
from policylens.cli.main import app
from zoo import tiny_diffusion_policy

runner = CliRunner()


def _rows(output: str) -> dict[str, list[str]]:
    """Table rows by mode label: the cells between the box-drawing bars, the timing table's
    (mode, median, p90, speed-up, skipped) followed by the error table's (MSE, max abs, executed ...)."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 5 and cells[0] and cells[0] != "mode" and "━" not in line:
            rows[cells[0]] = rows[cells[0]] + cells[1:] if cells[0] in rows else cells
    return rows


def test_unknown_mode_is_named_before_anything_else(tmp_path):
    result = runner.invoke(app, ["accel", "eval", "--policy", str(tmp_path / "nothing"), "--mode", "fast"])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # unwrap the error box
    assert "Invalid value for '--mode'" in text and "'fast' is not one of 'original', 'uniform', 'optimal'" in text
    assert "calibration" not in text.lower()


def test_optimal_without_calibration_is_refused_before_loading(tmp_path):
    result = runner.invoke(app, ["accel", "eval", "--policy", str(tmp_path / "nothing"), "--mode", "optimal"])
    assert result.exit_code == 2 and "--mode optimal needs --calibration" in result.stderr


def test_mode_list_always_starts_with_the_original_baseline():
    assert eval_modes(None, None) == [Mode.original, Mode.uniform]
    assert eval_modes(None, Path("c.json")) == [Mode.original, Mode.uniform, Mode.optimal]
    assert eval_modes([Mode.optimal], Path("c.json")) == [Mode.original, Mode.optimal]
    assert eval_modes([Mode.uniform, Mode.original, Mode.uniform], None) == [Mode.original, Mode.uniform]
    with pytest.raises(CommandError, match="needs --calibration"):
        eval_modes([Mode.uniform, Mode.optimal], None)


def test_optimal_alone_reports_its_speed_up_against_original(tmp_path):
    policy = tiny_diffusion_policy(steps=10)
    policy.save_pretrained(tmp_path / "pol")
    cal = calibrate(policy, random_observations(policy, 4), num_updates=2, batch_size=2, num_seeds=1)
    cal.save(tmp_path / "cal.json")
    args = ["accel", "eval", "--policy", str(tmp_path / "pol"), "--calibration", str(tmp_path / "cal.json")]
    result = runner.invoke(app, [*args, "--mode", "optimal", "--calls", "3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert list(rows) == ["original (baseline)", "optimal"], result.output
    base, opt = rows["original (baseline)"], rows["optimal"]
    assert base[3] == "1.00x" and base[4] == "0%"
    assert opt[4] == "80%"  # 2 of 10 steps computed per branch
    assert float(opt[3].rstrip("x")) == pytest.approx(float(base[1]) / float(opt[1]), rel=0.05)  # ms are rounded
