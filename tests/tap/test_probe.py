"""``probe_taps`` reports on which entry point each tap fires, and how often: the reference VLA's
expert runs once per flow step at inference and once in training; the LeRobot-style stand-in's
expert attention never runs in the joint training pass."""

import torch
from typer.testing import CliRunner

from lerobot_zoo import Pi0LikePolicy, pi0_like_batch
from policylens.cli.main import app
from policylens.models import TinyVLA, TinyVLAConfig, lerobot_adapter
from policylens.tap import example_entry_points, probe_taps, register_adapter

register_adapter("lerobot_zoo.Pi0LikePolicy", lambda _m: lerobot_adapter("pi0"))


def test_tiny_vla_entry_points():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    fired = probe_taps(model, example_entry_points(model))
    assert fired["expert.layers.0.out"] == {"inference": model.config.flow_steps, "training": 1}
    assert fired["llm.layers.1.attn.probs"] == {"inference": 1, "training": 1}


def test_pieces_model_shows_what_does_not_run():
    policy = Pi0LikePolicy()
    batch = pi0_like_batch(policy)
    fired = probe_taps(policy, {"predict": lambda: policy.predict_action_chunk(batch), "train": lambda: policy(batch)})
    assert fired["expert.layers.0.attn.probs"] == {"predict": policy.config.num_inference_steps}
    assert fired["llm.layers.0.out"] == {"predict": 1, "train": 1}


def test_taps_command_probe_column():
    res = CliRunner().invoke(app, ["taps", "tiny_vla", "--probe"])
    assert res.exit_code == 0, res.output
    assert "fires on" in res.output and "inference (10), training (1)" in res.output
