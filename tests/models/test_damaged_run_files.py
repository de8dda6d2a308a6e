"""A damaged weights or train-state file read by the trainers and the align loaders fails in one
ValueError naming the file and the fix (the same check as policy checkpoints)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policylens.models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy
from policylens.runs import RESTATE, load_train_state, read_safetensors, save_train_state


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_read_safetensors_names_a_truncated_file(tmp_path):
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(64)}, str(path))
    _truncate(path)
    with pytest.raises(ValueError, match=r"w\.safetensors is damaged.*the fix"):
        read_safetensors(path, fix="the fix")


def test_damaged_train_state_names_the_file_and_the_fix(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_train_state(tmp_path, model, opt, step=1)
    _truncate(tmp_path / "train_state.safetensors")
    with pytest.raises(ValueError, match="train_state.safetensors is damaged") as err:
        load_train_state(tmp_path, model, opt)
    assert RESTATE in str(err.value)


def test_damaged_diffusion_policy_names_the_file(tmp_path):
    TinyDiffusionPolicy(DiffusionPolicyConfig()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors is damaged"):
        TinyDiffusionPolicy.from_pretrained(tmp_path)
