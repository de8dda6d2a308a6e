"""``train vla --dataset``: TinyVLA learns from LeRobot / DROID episodes on disk (cameras through
``--camera-map``) without the simulator; the run records the dataset; bad data is refused first."""

import json

import pytest
from typer.testing import CliRunner

import policylens.sim.pybullet
from policylens.cli.main import app
from policylens.data.lerobot import LeRobotWriter
from policylens.sim.pybullet import generate_episodes, make_training_episodes

runner = CliRunner()


@pytest.fixture(scope="module")
def lerobot(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    generate_episodes("reach", 2, root / "sim", seed=0, fmt="lerobot", image_size=28, progress=False)
    # the same kind of data under other camera names, as a robot's own dataset would have them
    writer = LeRobotWriter(root / "robot", fps=15, masks=False)
    names = {"side": "varied_camera_1", "wrist": "hand_camera"}
    for ep in make_training_episodes("reach", 1, seed=3, render=True, image_size=28, progress=False,
                                     cameras=tuple(names.values())):  # fmt: skip
        rec = {
            "instruction": ep["instruction"], "success": True, "seed": 3, "scene": {}, "actions": ep["action"],
            "proprio": ep["proprio"], "state": ep["obs"],
            "images": {c: ep["images"][k] for c, k in names.items()},
            "intrinsics": {c: ep["intrinsics"][k] for c, k in names.items()},
            "extrinsics": {c: ep["extrinsics"][k] for c, k in names.items()},
        }  # fmt: skip
        writer.add_episode(rec)
    writer.finalize()
    return root


@pytest.fixture
def no_simulator(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the simulator recorded episodes although the data came from disk")

    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", refuse)


def _train(out, *extra):
    args = ["train", "vla", "--out", str(out), "--steps", "2", "--batch-size", "2", "--image-size", "28"]
    return runner.invoke(app, [*args, "--threads", "1", *extra])


def test_train_vla_learns_from_a_lerobot_dataset_with_other_camera_names(lerobot, tmp_path, no_simulator):
    out = tmp_path / "run"
    spec = f"lerobot:{lerobot / 'robot'}"
    result = _train(out, "--dataset", spec, "--camera-map", "side=varied_camera_1,wrist=hand_camera")
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and (out / "model.safetensors").is_file()
    data = json.loads((out / "run.json").read_text())["settings"]["data"]
    assert data["dataset"] == spec and data["camera_map"] == "side=varied_camera_1,wrist=hand_camera"
    assert data["episodes"] == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--dataset", "lerobot:{d}/robot"], "has no camera 'varied_camera_1' that the policy reads"),
        (["--dataset", "lerobot:{d}/sim", "--task", "reach"], "--dataset lerobot:"),
        (["--dataset", "lerobot:{d}/sim", "--episodes", "9"], "holds 2 episodes; 9 were asked for"),
    ],
)
def test_bad_data_is_refused_in_one_line(lerobot, tmp_path, no_simulator, extra, says):
    result = _train(tmp_path / "run", *[a.replace("{d}", str(lerobot)) for a in extra])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and says in errors[0], result.output
    assert not (tmp_path / "run").exists()
