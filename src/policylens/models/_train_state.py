"""Resumable training state without pickle: model + optimizer tensors in safetensors,
step counter and optimizer hyper-parameters in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ._hf_compat import align_state_dict

__all__ = ["load_train_state", "save_train_state"]


def save_train_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Write ``train_state.safetensors`` + ``train_state.json`` atomically (rename last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).contiguous()
    meta = {"step": step, "param_groups": opt["param_groups"]}
    save_file(tensors, str(directory / "train_state.safetensors.tmp"))
    (directory / "train_state.json.tmp").write_text(json.dumps(meta))
    os.replace(directory / "train_state.safetensors.tmp", directory / "train_state.safetensors")
    os.replace(directory / "train_state.json.tmp", directory / "train_state.json")


def load_train_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore model and optimizer from :func:`save_train_state`; returns the step (0 if none)."""
    directory = Path(directory)
    meta_path, tensor_path = directory / "train_state.json", directory / "train_state.safetensors"
    if not (meta_path.is_file() and tensor_path.is_file()):
        return 0
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(tensor_path))
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(align_state_dict(weights, model.state_dict().keys()))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])
