"""``retain train --policy DIR`` on a saved transformers pi0 directory: it trains through policy_train
(plain, and with a bridge cache of its own, L_ret 0 at step 0) and writes a policy load_model reads;
bad input fails in one line before training."""

import json

import _own_policies as op
import pytest
from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.models import NativePIPolicy, load_model

runner = CliRunner()
MAP = ",".join(f"{k}={v}" for k, v in op.PI_MAP.items())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_cli")
    op.reach_dataset(root / "reach")
    op.save_native_pi("pi0", root / "pi0")
    return root


def _run(data, out, *extra):
    args = ["retain", "train", "--policy", str(data / "pi0"), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--anchor-batch-size", "2", "--threads", "1", "--camera-map", MAP]  # fmt: skip
    return runner.invoke(app, [*args, *extra])


def test_plain_fine_tuning_of_a_native_pi_directory(data, tmp_path):
    out = tmp_path / "run"
    res = _run(data, out, "--dataset", f"lerobot:{data / 'reach'}", "--method", "plain")
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output
    summary = json.loads((out / "retain.json").read_text())
    assert summary["steps_run"] == 2 and summary["method"] == "plain"
    assert isinstance(load_model(out / "policy"), NativePIPolicy)
    recorded = json.loads((out / "run.json").read_text())["settings"]["data"]
    assert recorded["dataset"] == f"lerobot:{data / 'reach'}" and recorded["anchors"] is None


def test_craft_with_its_own_bridge_cache(data, tmp_path):
    res = runner.invoke(app, ["cache", "build", "--policy", str(data / "pi0"), "--dataset", f"lerobot:{data / 'reach'}",
                              "--kind", "bridge", "--dtype", "float32", "--camera-map", MAP, "--out",
                              str(tmp_path / "bridge")])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = tmp_path / "run"
    res = _run(data, out, "--dataset", f"lerobot:{data / 'reach'}", "--anchors", str(tmp_path / "bridge"))
    assert res.exit_code == 0, res.output
    series = json.loads((out / "train_state.json").read_text())["extra"]["series"]
    assert series["loss_ret"][0] < 1e-10


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--task", "reach"], "--task / --replay-task record TinyVLA's simulated cameras"),
        (["--dataset", "lerobot:{d}/reach"], "--method craft needs --anchors"),
        (["--dataset", "lerobot:{d}/reach", "--method", "plain", "--replay-fraction", "0.5"], "--replay-fraction 0.5"),
        (["--dataset", "lerobot:{d}/reach", "--method", "plain", "--camera-map", "top=base_0_rgb"],
         "camera_map names dataset camera 'top'"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_one_line_before_training(data, tmp_path, extra, says):
    res = _run(data, tmp_path / "run", *[a.replace("{d}", str(data)) for a in extra])
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and says in errors[0], res.output
    assert not (tmp_path / "run" / "train_state.json").exists()
