"""Resumable training state without pickle: model + optimizer tensors in safetensors,
step counter and optimizer hyper-parameters in JSON, and every random state the loop draws
from (``_rng_state``), so that a resumed run draws what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .._jsonfile import read_json_file
from ._checkpoint import fit_state, read_safetensors
from ._rng_state import Generators, restore_rng_state, rng_state

__all__ = ["RESTATE", "load_train_extra", "load_train_state", "save_train_state", "trained_steps"]

RESTATE = "delete it to start the run over, or pass --overwrite"  # the fix named for a damaged train state


def save_train_state(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict | None = None,
    generators: Generators | None = None,
) -> None:
    """Write ``train_state.safetensors`` + ``train_state.json`` atomically (rename last); ``extra``:
    JSON-ready state of whatever else the run keeps (e.g. a retention step's λ); ``generators``: the
    loop's own random generators by name, saved with the global ones (:func:`rng_state`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, tied = _unaliased({f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()})
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).contiguous()
    rng_tensors, rng_meta = rng_state(generators)
    tensors.update(rng_tensors)
    meta = {"step": step, "param_groups": opt["param_groups"], "extra": extra or {}, "rng": rng_meta}
    if tied:
        meta["tied"] = tied
    save_file(tensors, str(directory / "train_state.safetensors.tmp"))
    (directory / "train_state.json.tmp").write_text(json.dumps(meta))
    os.replace(directory / "train_state.safetensors.tmp", directory / "train_state.safetensors")
    os.replace(directory / "train_state.json.tmp", directory / "train_state.json")


def _unaliased(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``tensors`` with each tensor stored once (safetensors refuses shared memory): a name that is the
    same view of the same memory as an earlier one (tied weights: a language model's ``lm_head`` and
    embeddings) is left out and mapped to that name; a partial overlap is copied."""
    kept: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in tensors.items():
        storage = t.untyped_storage().data_ptr()
        view = (storage, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if view in views:
            tied[name] = views[view]
            continue
        if storage in storages and t.numel():
            t = t.clone()
        views[view] = name
        storages.add(storage)
        kept[name] = t
    return kept, tied


def load_train_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, generators: Generators | None = None
) -> int:
    """Restore model, optimizer and random states (global, and ``generators`` in place) from
    :func:`save_train_state`; returns the step (0 if none). A state written before random states
    were saved restores none of them."""
    directory = Path(directory)
    meta_path, tensor_path = directory / "train_state.json", directory / "train_state.safetensors"
    if not (meta_path.is_file() and tensor_path.is_file()):
        return 0
    meta = json.loads(meta_path.read_text())
    tensors = read_safetensors(tensor_path, fix=RESTATE)
    for alias, kept in meta.get("tied", {}).items():
        tensors[alias] = tensors[kept]
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(fit_state(model, weights))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if "rng" in meta:
        restore_rng_state(tensors, meta["rng"], generators)
    return int(meta["step"])


def load_train_extra(directory: str | Path) -> dict:
    """The ``extra`` state saved with the training state ({} when none)."""
    meta_path = Path(directory) / "train_state.json"
    return json.loads(meta_path.read_text()).get("extra", {}) if meta_path.is_file() else {}


def trained_steps(directory: str | Path) -> int:
    """The step the training state in ``directory`` records (``train_state.json``); 0 when there is none."""
    meta_path = Path(directory) / "train_state.json"
    if not meta_path.is_file():
        return 0
    meta = read_json_file(meta_path, "the training state (written by policylens)")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{meta_path} field 'step'={step!r}; expected a step count >= 0; {RESTATE}")
    return step
