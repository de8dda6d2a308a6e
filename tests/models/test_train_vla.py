"""TinyVLA training: a smoke run on synthetic episodes, resume from saved state."""

import json

import numpy as np
import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig, VLATrainConfig, load_policy, train_vla

CFG = {"image_size": 28, "vision_layers": 1, "layers": 1, "max_text_tokens": 8, "chunk_size": 3}


def episodes(n=2, t=5):
    rng = np.random.default_rng(0)
    cams = ("varied_camera_1", "hand_camera")
    return [
        {
            "images": {c: rng.integers(0, 255, (t, 28, 28, 3), dtype=np.uint8) for c in cams},
            "state": rng.normal(size=(t, 7)).astype(np.float32),
            "action": rng.normal(loc=2.0, size=(t, 7)).astype(np.float32),
            "instruction": "reach the red cube",
        }
        for _ in range(n)
    ]


def test_smoke_training_writes_checkpoint_and_normalization(tmp_path):
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**CFG))
    eps = episodes()
    losses = train_vla(model, eps, VLATrainConfig(steps=3, batch_size=4, save_every=2), tmp_path)
    assert len(losses) == 3
    assert all(np.isfinite(losses))
    all_actions = np.concatenate([e["action"] for e in eps])
    np.testing.assert_allclose(model.action_mean.numpy(), all_actions.mean(0), rtol=1e-5)
    loaded = load_policy(tmp_path)
    torch.testing.assert_close(loaded.action_mean, model.action_mean)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 2
    assert list((tmp_path / "tb").iterdir())


def test_resume_continues_from_saved_step(tmp_path):
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**CFG))
    train_vla(model, episodes(), VLATrainConfig(steps=2, batch_size=2, save_every=1), tmp_path)
    resumed = TinyVLA(TinyVLAConfig(**CFG))
    losses = train_vla(resumed, episodes(), VLATrainConfig(steps=5, batch_size=2, save_every=1), tmp_path)
    assert len(losses) == 3  # steps 2, 3, 4 only
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 5


def test_missing_episode_field_is_named(tmp_path):
    eps = episodes()
    del eps[1]["instruction"]
    with pytest.raises(KeyError, match="episode 1 lacks field 'instruction'"):
        train_vla(TinyVLA(TinyVLAConfig(**CFG)), eps, VLATrainConfig(steps=1), tmp_path)
