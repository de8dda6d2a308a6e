"""``retain train --dataset`` / ``--replay-dataset``: task B and replay from LeRobot / DROID episodes on
disk through the episode feed, checked against the policy before training, with the simulator
left alone; the samples the trainer gets are the dataset's frames, states and actions."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import policylens.sim.pybullet
from policylens.anchors import build_cache
from policylens.cli.main import app
from policylens.data import FeedError, dataset_training_episodes, open_episodes
from policylens.models import load_model
from policylens.sim.pybullet import generate_episodes

runner = CliRunner()
CAMERAS = "varied_camera_1,hand_camera"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("retain_data")
    build_cache("tiny_vla", "synthetic:4", str(root / "bridge"), kind="bridge", batch_size=4, progress=False)
    generate_episodes("put_in_tray", 2, root / "lerobot", seed=0, fmt="lerobot", image_size=32, progress=False)
    generate_episodes("reach", 1, root / "droid", seed=1, fmt="droid", image_size=32, progress=False)
    return root


@pytest.fixture
def no_simulator(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the simulator recorded episodes although the task data came from disk")

    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", refuse)


def _run(data, out, *extra):
    args = ["retain", "train", "--anchors", str(data / "bridge"), "--out", str(out), "--steps", "2"]
    return runner.invoke(app, [*args, "--batch-size", "2", "--anchor-batch-size", "2", "--threads", "1", *extra])


def test_task_and_replay_from_disk_train_and_are_recorded(data, tmp_path, no_simulator):
    out = tmp_path / "run"
    result = _run(data, out, "--dataset", f"lerobot:{data / 'lerobot'}", "--replay-dataset", f"droid:{data / 'droid'}")
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "run.json").read_text())["settings"]["data"]
    assert recorded["dataset"] == f"lerobot:{data / 'lerobot'}" and recorded["task"] is None
    assert recorded["replay_dataset"] == f"droid:{data / 'droid'}"
    summary = result.output[result.output.index('{"steps_run"') :].splitlines()[0]
    assert json.loads(summary)["steps_run"] == 2


def test_replay_by_fraction_for_tiny_vla_is_trained_and_recorded(data, tmp_path, no_simulator):
    out, task, replay = tmp_path / "run", f"lerobot:{data / 'lerobot'}", f"droid:{data / 'droid'}"
    result = _run(data, out, "--dataset", task, "--replay-dataset", replay, "--replay-fraction", "0.5")
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["train"]["replay_fraction"] == 0.5
    steps = sum(len(ep) for spec in (task, replay) for ep in open_episodes(spec))
    assert settings["data"]["steps_in_episodes"] == steps  # the task's two episodes and the replay's one
    again = _run(data, out, "--dataset", task, "--replay-dataset", replay, "--replay-fraction", "0.5")
    assert again.exit_code == 0 and "already finished at step 2" in again.output, again.output  # the same run, finished
    other = _run(data, out, "--dataset", task, "--replay-dataset", replay)  # whole episodes: another run
    assert other.exit_code != 0 and "replay_fraction" in other.output, other.output
    same = ("--dataset", task, "--replay-dataset", replay, "--replay-fraction", "0.5")
    every = _run(data, out, *same, "--retain-every", "2")
    assert every.exit_code != 0 and "data.retain_every unset there, 2 now" in every.output, every.output


def test_the_trainer_gets_the_datasets_frames_states_and_actions(data):
    model = load_model("tiny_vla")
    eps = dataset_training_episodes(model, f"lerobot:{data / 'lerobot'}", episodes=1)
    (ep,) = open_episodes(f"lerobot:{data / 'lerobot'}")[:1]
    assert len(eps) == 1 and eps[0]["instruction"] == ep.instruction
    np.testing.assert_array_equal(eps[0]["state"], ep.proprio)
    np.testing.assert_array_equal(eps[0]["action"], ep.actions)
    for cam in model.config.cameras:
        np.testing.assert_array_equal(eps[0]["images"][cam][3], ep.frame(cam, 3))
    with pytest.raises(FeedError, match="holds 2 episodes; 5 were asked for"):
        dataset_training_episodes(model, f"lerobot:{data / 'lerobot'}", episodes=5)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--dataset", "lerobot:{d}/lerobot", "--task", "reach"], "--task reach and --dataset"),
        (["--replay-task", "reach", "--replay-dataset", "droid:{d}/droid"], "--replay-task and --replay-dataset"),
        (["--dataset", "lerobot:{d}/nowhere"], "nowhere"),
        (["--dataset", "lerobot:{d}/lerobot", "--camera-map", "wrist=hand_camera"], "camera_map names dataset camera"),
        (["--dataset", "lerobot:{d}/lerobot", "--replay-fraction", "0.5"], "the replay rows come from --replay-task"),
        (["--replay-task", "reach", "--replay-episodes", "1", "--replay-fraction", "0.1"], "of batch_size=2 is 0 rows"),
    ],
)
def test_bad_task_data_is_refused_in_one_line_before_training(data, tmp_path, no_simulator, extra, says):
    result = _run(data, tmp_path / "run", *[a.replace("{d}", str(data)) for a in extra])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and says in errors[0], result.output
    assert not (tmp_path / "run" / "train_state.json").exists()
