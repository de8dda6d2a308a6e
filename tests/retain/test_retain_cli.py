"""``policylens retain train``: every input checked before any episode is recorded, a finished run
reporting itself, a resumed run's summary over the whole run, --projection / --task-stats /
--threads recorded. Episodes come from a stand-in for the simulator that counts its calls."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import policylens.sim.pybullet
from policylens.anchors import build_cache
from policylens.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchors")
    build_cache("tiny_vla", "synthetic:4", str(root / "bridge"), kind="bridge", batch_size=4, progress=False)
    build_cache("tiny_vla", "synthetic:2", str(root / "pooled"), batch_size=2, progress=False)
    return root


@pytest.fixture
def recorded(monkeypatch):
    """Replace the simulator: small random episodes, each call listed."""
    calls = []

    def make(task, n, seed=0, render=False, image_size=224, cameras=(), **_):
        calls.append((task, n, seed))
        rng = np.random.default_rng(seed)
        return [
            {
                "images": {c: rng.integers(0, 256, (4, image_size, image_size, 3), dtype=np.uint8) for c in cameras},
                "proprio": rng.normal(size=(4, 7)).astype(np.float32),
                "action": rng.normal(size=(4, 7)).astype(np.float32),
                "instruction": f"{task} {i}",
            }
            for i in range(n)
        ]

    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", make)
    return calls


@pytest.fixture
def no_episodes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("episodes were recorded before the inputs were checked")

    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", refuse)


def _args(cache, out, *extra, anchors=None):
    anchors = str(anchors or cache / "bridge")
    base = ["retain", "train", "--anchors", anchors, "--out", str(out), "--episodes", "1"]
    return [*base, "--steps", "2", "--batch-size", "2", "--anchor-batch-size", "2", "--threads", "1", *extra]


def _error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize(
    ("anchors", "change", "expected"),
    [
        ("{tmp}/nope", [], r"error: --anchors: anchor cache \S+/nope does not exist; build the teacher's bridge cache"),
        ("{tmp}", [], r"error: --anchors: No manifest.json in store"),
        ("{cache}/pooled", [], r"error: --anchors: anchor cache \S+/pooled is not a bridge cache"),
        (None, ["--task", "stack"], r"error: --task 'stack' is unknown; use one of \['hover', 'lift', 'put_in"),
        (None, ["--replay-task", "reach"], r"error: --replay-task reach with --replay-episodes 0: experience replay"),
        (None, ["--policy", "nope"], r"error: --policy nope: load_model: 'nope' is neither a built-in policy"),
        (
            None,
            ["--policy", "tiny_diffusion_policy"],
            r"error: --policy tiny_diffusion_policy: a TinyDiffusionPolicy; retain train fine-tunes a TinyVLA",
        ),
    ],
)
def test_bad_inputs_fail_before_any_episode_in_one_line(cache, tmp_path, no_episodes, anchors, change, expected):
    anchors = anchors and anchors.format(tmp=tmp_path, cache=cache)
    result = runner.invoke(app, _args(cache, tmp_path / "run", *change, anchors=anchors))
    assert re.match(expected, _error_line(result)), result.output
    assert not (tmp_path / "run").exists()


def test_bad_choices_are_refused_with_the_library_choices(cache, tmp_path, no_episodes):
    for option, bad in (("--method", "sgd"), ("--projection", "always"), ("--loss", "l1")):
        result = runner.invoke(app, _args(cache, tmp_path / "run", option, bad))
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


def test_another_runs_out_is_refused_and_a_finished_run_reports_itself(cache, tmp_path, recorded, monkeypatch):
    out = tmp_path / "run"
    first = runner.invoke(app, _args(cache, out, "--projection", "active", "--no-task-stats"))
    assert first.exit_code == 0, first.output
    assert "torch threads: 1" in first.output.splitlines()[0] and recorded == [("put_in_tray", 1, 0)]
    settings = json.loads((out / "run.json").read_text())["settings"]["data"]
    assert settings["retention"]["projection"] == "active" and settings["task_stats"]["enabled"] is False
    assert settings["policy"] == "tiny_vla"
    text = (out / "retain.json").read_text()
    assert json.loads(text)["steps_run"] == 2

    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", None)  # any recording would fail
    other = runner.invoke(app, _args(cache, out, "--projection", "conflict", "--no-task-stats"))
    line = _error_line(other)
    assert "records another run" in line and "data.retention.projection 'active' there, 'conflict' now" in line

    again = runner.invoke(app, _args(cache, out, "--projection", "active", "--no-task-stats"))
    assert again.exit_code == 0, again.output
    assert f"already finished at step 2; results in {out / 'retain.json'}" in again.output
    assert json.loads(again.output.splitlines()[-1]) == json.loads(text)
    assert (out / "retain.json").read_text() == text


def test_a_resumed_run_sums_up_the_whole_run(cache, tmp_path, recorded):
    out = tmp_path / "run"
    first = runner.invoke(app, _args(cache, out))
    assert first.exit_code == 0, first.output
    assert "task data outside the teacher's normalisation" in first.output  # random states and actions
    before = json.loads((out / "retain.json").read_text())
    more = runner.invoke(app, [*_args(cache, out), "--steps", "3"])
    assert more.exit_code == 0, more.output
    after = json.loads((out / "retain.json").read_text())
    assert after["steps_run"] == 3 and len(after["lambda_history"]) == 3
    assert after["first_loss_act"] == before["first_loss_act"] and after["task_stats"] == before["task_stats"]
    assert len(recorded) == 2


def test_retain_every_and_anchor_features_reach_the_run(cache, tmp_path, recorded):
    out = tmp_path / "every"
    res = runner.invoke(app, _args(cache, out, "--retain-every", "2", "--no-preload-anchors"))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "run.json").read_text())["settings"]["data"]
    assert data["retain_every"] == 2
    series = json.loads((out / "train_state.json").read_text())["extra"]["series"]["loss_ret"]
    assert np.isfinite(series[0]) and np.isnan(series[1])  # step 1 is a plain step: no retention pass


def test_action_features_need_a_cache_with_the_action_output(cache, tmp_path, no_episodes):
    res = runner.invoke(app, _args(cache, tmp_path / "a", "--anchor-features", "action", "--method", "fixed"))
    assert re.search(r"error: --anchors: .*action", _error_line(res)), res.output
