"""Resumable training state without pickle: model + optimizer tensors in safetensors,
step counter and optimizer hyper-parameters in JSON; the run's settings in ``run.json``.

The state also holds every random state the loop draws from, so that a resumed run draws what the
uninterrupted one would have drawn: torch's CPU generator and each CUDA device's (uint8 tensors in
safetensors), numpy's and Python's global generators (JSON), and the loop's own generators (its
batch order, noise, row subsets) passed by name. Saving reads these states without drawing.

A training output directory belongs to one run. :func:`claim_run_dir` records the settings
that define the run (data, model, optimiser; not the number of steps, which a rerun may raise
to train on) and refuses a directory that holds another run, naming the settings that differ.
:func:`stop_on_signal` turns SIGINT / SIGTERM into a flag that the loop checks after each step,
so it saves its state and raises :class:`TrainingInterrupted` instead of dying mid-step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ._checkpoint import read_safetensors
from ._hf_compat import align_state_dict

__all__ = [
    "RUN_FILE",
    "TrainingInterrupted",
    "check_run_dir",
    "claim_run_dir",
    "join_generators",
    "load_train_extra",
    "load_train_state",
    "restore_rng_state",
    "rng_state",
    "save_train_state",
    "stop_on_signal",
]

RESTATE = "delete it to start the run over, or pass --overwrite"  # the fix named for a damaged train state

RUN_FILE = "run.json"
RUN_FORMAT = "policylens-run-1"
# everything a training run writes into its directory (and all that overwrite=True deletes)
RUN_OUTPUTS = ("train_state.safetensors", "train_state.json", RUN_FILE, "config.json", "model.safetensors", "tb")


Generators = Mapping[str, "torch.Generator | np.random.Generator"]


def _listed(x: object) -> object:  # numpy arrays inside a bit generator's state (MT19937's key)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} in a random state is not JSON-ready")


def rng_state(generators: Generators | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random state the run draws from, as ``(tensors, json)``: torch's CPU generator
    (``rng.torch``) and each CUDA device's (``rng.cuda.{i}``), numpy's and Python's global generators,
    and ``generators`` by name (a ``torch.Generator`` as ``rng.gen.{name}``, a numpy ``Generator`` as
    its bit generator's state). Nothing is drawn."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    meta: dict = {
        "numpy": [name, key.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
        "numpy_generators": {},
    }
    for k, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            tensors[f"rng.gen.{k}"] = g.get_state()
        elif isinstance(g, np.random.Generator):
            meta["numpy_generators"][k] = json.loads(json.dumps(g.bit_generator.state, default=_listed))
        else:
            raise TypeError(f"generators[{k!r}] is a {type(g).__name__}; pass a torch.Generator or numpy Generator")
    return tensors, meta


def restore_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping, generators: Generators | None = None) -> None:
    """Set the states :func:`rng_state` returned: the global generators, and ``generators`` in place
    (each must be in the state, saved under the same name)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"rng.cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], i)
    name, key, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, np.asarray(key, np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))
    for k, g in (generators or {}).items():
        if isinstance(g, torch.Generator) and f"rng.gen.{k}" in tensors:
            g.set_state(tensors[f"rng.gen.{k}"])
        elif isinstance(g, np.random.Generator) and k in meta["numpy_generators"]:
            g.bit_generator.state = meta["numpy_generators"][k]
        else:
            saved = sorted(
                [t[len("rng.gen.") :] for t in tensors if t.startswith("rng.gen.")] + list(meta["numpy_generators"])
            )
            raise ValueError(
                f"the training state holds no {type(g).__name__} {k!r} (it holds {saved}); it was written by "
                "another version of this loop: pass --overwrite (overwrite=True) to start the run again"
            )


def join_generators(generators: Generators | None, **own: torch.Generator | np.random.Generator) -> dict:
    """A step's ``generators`` and the loop's ``own`` in one mapping to save; a name may not be both."""
    clash = sorted(set(generators or {}) & set(own))
    if clash:
        raise ValueError(f"generators: {clash} name the loop's own generators; name the step's another way")
    return {**(generators or {}), **own}


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
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).contiguous()
    rng_tensors, rng_meta = rng_state(generators)
    tensors.update(rng_tensors)
    meta = {"step": step, "param_groups": opt["param_groups"], "extra": extra or {}, "rng": rng_meta}
    save_file(tensors, str(directory / "train_state.safetensors.tmp"))
    (directory / "train_state.json.tmp").write_text(json.dumps(meta))
    os.replace(directory / "train_state.safetensors.tmp", directory / "train_state.safetensors")
    os.replace(directory / "train_state.json.tmp", directory / "train_state.json")


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
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(align_state_dict(weights, model.state_dict().keys()))
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


def _flat(d: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_UNSET = object()


def _show(settings: Mapping, key: str) -> str:
    return repr(settings[key]) if key in settings else "unset"


def check_run_dir(directory: str | Path, settings: Mapping, partial: bool = False) -> bool:
    """Raise ``FileExistsError`` if ``directory`` holds another run than ``settings`` describes;
    True if it holds this run (to resume), False if it holds none. ``partial``: compare only the
    settings given (a command line can check what it knows before it makes the data)."""
    directory = Path(directory)
    run_file = directory / RUN_FILE
    present = [name for name in RUN_OUTPUTS if (directory / name).exists()]
    if not present:
        return False
    if not run_file.is_file():
        raise FileExistsError(
            f"{directory} holds training outputs {present} but no {RUN_FILE} recording their settings; "
            "pass --overwrite (overwrite=True) to replace them, or choose another --out"
        )
    old = _flat(json.loads(run_file.read_text()).get("settings", {}))
    new = _flat(json.loads(json.dumps(settings)))  # tuples -> lists, as they come back from the file
    keys = sorted(new.keys() if partial else old.keys() | new.keys())
    diffs = [
        f"{k} {_show(old, k)} there, {_show(new, k)} now" for k in keys if old.get(k, _UNSET) != new.get(k, _UNSET)
    ]
    if diffs:
        raise FileExistsError(
            f"{run_file} records another run ({'; '.join(diffs)}); rerun with its settings to resume, pass "
            "--overwrite (overwrite=True) to replace it, or choose another --out"
        )
    return True


def claim_run_dir(directory: str | Path, settings: Mapping, overwrite: bool = False) -> bool:
    """Make ``directory`` the output of the run described by ``settings`` (JSON-able).

    Holding this run: nothing to do, True (the caller resumes). Holding no run: record
    ``settings`` in ``run.json``, False. Holding another run: :func:`check_run_dir`'s error,
    unless ``overwrite``, which deletes the run outputs (only those) and records ``settings``.
    """
    directory = Path(directory)
    if not overwrite and check_run_dir(directory, settings):
        return True
    for name in RUN_OUTPUTS:
        path = directory / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    record = {"format": RUN_FORMAT, "settings": json.loads(json.dumps(settings))}
    (directory / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return False


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving its state; rerun the same command to resume."""

    def __init__(self, signum: int, step: int, directory: str | Path) -> None:
        self.signum, self.step, self.directory = signum, step, Path(directory)
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: state saved in {self.directory}/train_state.*; rerun the same command to resume"
        )


class _StopFlag:
    signum: int | None = None


@contextmanager
def stop_on_signal(
    enabled: bool = True, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[_StopFlag]:
    """Within the block a first SIGINT / SIGTERM only sets ``flag.signum`` (the loop saves and
    stops after its current step); a second one interrupts at once. Not ``enabled``, or outside
    the main thread (where Python cannot install handlers), the flag never trips."""
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: object) -> None:
        if flag.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped without saving")
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
