"""``policylens accel calibrate / eval --policy DIR`` on LeRobot SmolVLA / pi0 checkpoint directories (the CI
stand-ins saved as ``config.json`` + ``model.safetensors`` and loaded through ``load_model`` with a stand-in
``lerobot.policies.factory``: CI has no LeRobot) and on a saved transformers pi0: the calibration and its
plots are written, and eval's row with every flow step updated equals the uncached policy exactly."""

import dataclasses
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors.torch import load_model, save_model
from typer.testing import CliRunner

import pi_zoo
from lerobot_zoo import Pi0LikeConfig, Pi0LikePolicy, byte_preprocessor
from policylens.cli.main import app
from smolvla_zoo import SmolVLALikeConfig, SmolVLALikePolicy

runner = CliRunner()
K = 4  # the stand-ins' flow steps
STAND_INS = {"smolvla": (SmolVLALikeConfig, SmolVLALikePolicy, "num_steps"),
             "pi0": (Pi0LikeConfig, Pi0LikePolicy, "num_inference_steps")}  # fmt: skip


def save_lerobot_dir(variant: str, path):
    """A stand-in policy written as LeRobot writes one: ``config.json`` (``type`` + the config) and weights."""
    cfg_cls, policy_cls, steps = STAND_INS[variant]
    policy = policy_cls(cfg_cls(**{steps: K}), seed=2)
    path.mkdir(parents=True)
    fields = {f.name: getattr(policy.config, f.name) for f in dataclasses.fields(policy.config)}
    (path / "config.json").write_text(json.dumps({"type": variant, **fields}))
    save_model(policy, str(path / "model.safetensors"))
    return path


class _PolicyClass:
    """``get_policy_class(variant)``: ``from_pretrained(DIR)`` builds the stand-in from the saved files."""

    def __init__(self, variant: str) -> None:
        self.variant = variant

    def from_pretrained(self, path: str):
        cfg_cls, policy_cls, _ = STAND_INS[self.variant]
        fields = json.loads((Path(path) / "config.json").read_text())
        fields.pop("type")
        policy = policy_cls(cfg_cls(**fields), seed=9)  # other random weights, replaced by the saved ones
        load_model(policy, str(Path(path) / "model.safetensors"))
        return policy


@pytest.fixture
def fake_lerobot(monkeypatch):
    factory = types.ModuleType("lerobot.policies.factory")
    factory.get_policy_class = _PolicyClass

    def make_pre_post_processors(config, pretrained_path):
        return byte_preprocessor(SimpleNamespace(config=config), max_tokens=6), None

    factory.make_pre_post_processors = make_pre_post_processors
    for name in ("lerobot", "lerobot.policies"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "lerobot.policies.factory", factory)


def _rows(output: str) -> dict[str, list[str]]:
    """Table rows by mode label: the timing table's cells, then the error table's (as test_accel_eval reads them)."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 3 and cells[0] and cells[0] != "mode" and "━" not in line:
            rows[cells[0]] = rows[cells[0]] + cells[1:] if cells[0] in rows else cells
    return rows


def _calibrate_then_eval(policy_dir, tmp_path, steps: int) -> dict[str, list[str]]:
    cal, plots = tmp_path / "cal.json", tmp_path / "plots"
    res = runner.invoke(app, ["accel", "calibrate", "--policy", str(policy_dir), "--out", str(cal), "--num-obs", "2",
                              "--batch-size", "2", "--num-updates", "2", "--plots", str(plots)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output and "random images of" in res.output
    data = json.loads(cal.read_text())
    assert data["num_steps"] == steps and all(len(s) == 2 and s[0] == 0 for s in data["schedule"].values())
    assert (plots / "schedule.png").is_file()
    args = ["accel", "eval", "--policy", str(policy_dir), "--calibration", str(cal), "--mode", "uniform", "--mode",
            "optimal", "--num-updates", str(steps), "--calls", "1", "--batch", "2"]  # fmt: skip
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output
    rows = _rows(res.output)
    assert list(rows) == ["original (baseline)", "uniform", "optimal"], res.output
    return rows


@pytest.mark.parametrize("variant", ["smolvla", "pi0"])
def test_lerobot_directory_calibrate_then_eval(fake_lerobot, tmp_path, variant):
    rows = _calibrate_then_eval(save_lerobot_dir(variant, tmp_path / variant), tmp_path, K)
    uniform, optimal = rows["uniform"], rows["optimal"]
    assert uniform[4] == "0%"  # every flow step updated
    mse, max_abs = uniform[-4:-2]  # action MSE, max abs (then the executed part's)
    assert mse == "0.00e+00" and max_abs == "0.000"
    assert optimal[4] == "50%" and float(optimal[-4]) > 0  # 2 of 4 steps computed: the actions moved


def test_transformers_pi_directory_calibrate_then_eval(tmp_path):
    model, proc = pi_zoo.pair("pi0")
    model.save_pretrained(tmp_path / "pi0")
    proc.save_pretrained(tmp_path / "pi0")
    rows = _calibrate_then_eval(tmp_path / "pi0", tmp_path, 3)
    assert rows["uniform"][4] == "0%" and rows["uniform"][-4:-2] == ["0.00e+00", "0.000"]


def _one_error(res) -> str:
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    return errors[0]


def test_bad_input_is_one_line(fake_lerobot, tmp_path, monkeypatch):
    path = save_lerobot_dir("smolvla", tmp_path / "smolvla")
    obs = tmp_path / "obs.safetensors"
    res = runner.invoke(app, ["accel", "eval", "--policy", str(path), "--obs", str(obs)])
    assert "observation files are for diffusion policies; a LeRobotTeacher runs on random images" in _one_error(res)
    model, _ = pi_zoo.pair("pi0")
    model.save_pretrained(tmp_path / "bare")  # no processor beside it
    res = runner.invoke(app, ["accel", "calibrate", "--policy", str(tmp_path / "bare"), "--out", str(tmp_path / "c")])
    assert "a PI0ForConditionalGeneration; accel runs" in _one_error(res)
    monkeypatch.setitem(sys.modules, "lerobot.policies.factory", None)  # LeRobot not installed
    res = runner.invoke(app, ["accel", "calibrate", "--policy", str(path), "--out", str(tmp_path / "cal.json")])
    assert f"--policy {path}:" in (line := _one_error(res)) and "pip install lerobot" in line
    assert not (tmp_path / "cal.json").exists()
