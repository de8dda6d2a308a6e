"""A run directory belongs to one run: ``run.json`` records the settings that define it.

:func:`claim_run_dir` records the settings (data, model, optimiser; not what a rerun may change,
such as the number of steps to train) and refuses a directory that holds another run, naming
the settings that differ; the same settings resume. What a kind of run writes into its directory
(:class:`RunKind`: its outputs, all that ``overwrite`` deletes, and the layout of its ``run.json``)
is the caller's: training runs (:data:`TRAINING_RUN`) and the attention job share this logic.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .._jsonfile import read_json_file

__all__ = [
    "RUN_FILE",
    "RUN_FORMAT",
    "RUN_OUTPUTS",
    "TRAINING_RUN",
    "RunDirError",
    "RunKind",
    "check_run_dir",
    "claim_run_dir",
    "clear_run_dir",
    "recorded_settings",
]

RUN_FILE = "run.json"
RUN_FORMAT = "policylens-run-1"
# everything a training run writes into its directory (and all that overwrite=True deletes)
RUN_OUTPUTS = ("train_state.safetensors", "train_state.json", RUN_FILE, "config.json", "model.safetensors", "tb")


@dataclass(frozen=True)
class RunKind:
    """One kind of run: ``name`` (for messages), ``outputs`` (the files and folders it writes, ``run.json``
    among them: what marks a run there and all that ``overwrite`` deletes), ``flat``: ``run.json`` is
    the settings themselves instead of ``{"format": RUN_FORMAT, "settings": ...}``, and the ``indent`` it
    is written with (a kind keeps the layout its existing runs have)."""

    name: str
    outputs: tuple[str, ...]
    flat: bool = False
    indent: int = 1

    def __post_init__(self) -> None:
        if RUN_FILE not in self.outputs:
            raise ValueError(f"RunKind.outputs={self.outputs!r}: list {RUN_FILE!r} among the outputs")


TRAINING_RUN = RunKind("training", RUN_OUTPUTS)


class RunDirError(FileExistsError, ValueError):
    """The directory holds another run (or outputs with no record of their settings)."""


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


def recorded_settings(directory: str | Path, kind: RunKind = TRAINING_RUN) -> dict | None:
    """The settings ``run.json`` in ``directory`` records (None when there is no ``run.json``)."""
    run_file = Path(directory) / RUN_FILE
    if not run_file.is_file():
        return None
    record = read_json_file(run_file, f"the settings of a {kind.name} run (written by policylens)")
    return record if kind.flat else record.get("settings", {})


def check_run_dir(
    directory: str | Path,
    settings: Mapping,
    partial: bool = False,
    kind: RunKind = TRAINING_RUN,
    defaults: Mapping[str, object] | None = None,
) -> bool:
    """Raise :class:`RunDirError` (a ``FileExistsError`` and a ``ValueError``) if ``directory`` holds
    another run than ``settings`` describes; True if it holds this run (to resume), False if it holds
    none. ``partial``: compare only the settings given (a command line can check what it knows before
    it makes the data). ``defaults``: flat keys (``"train.replay_fraction"``) recorded only when not at
    their default, with that default: absent on either side means the default, and they are compared
    under ``partial`` too (a run recorded with the setting is another run than one without it)."""
    directory = Path(directory)
    run_file = directory / RUN_FILE
    present = [name for name in kind.outputs if (directory / name).exists()]
    if not present:
        return False
    if not run_file.is_file():
        raise RunDirError(
            f"{directory} holds {kind.name} outputs {present} but no {RUN_FILE} recording their settings; "
            "pass --overwrite (overwrite=True) to replace them, or choose another --out"
        )
    old = _flat(recorded_settings(directory, kind))
    new = _flat(json.loads(json.dumps(settings)))  # tuples -> lists, as they come back from the file
    defaults = dict(defaults or {})
    keys = sorted((new.keys() if partial else old.keys() | new.keys()) | defaults.keys())
    differ = [k for k in keys if old.get(k, defaults.get(k, _UNSET)) != new.get(k, defaults.get(k, _UNSET))]
    if differ:
        diffs = "; ".join(f"{k} {_show(old, k)} there, {_show(new, k)} now" for k in differ)
        raise RunDirError(
            f"{run_file} records another run: {', '.join(differ)} differ ({diffs}); rerun with its settings to "
            "resume, pass --overwrite (overwrite=True) to replace it, or choose another --out"
        )
    return True


def clear_run_dir(directory: str | Path, kind: RunKind = TRAINING_RUN) -> None:
    """Delete the outputs of ``kind`` in ``directory`` (only those; other files stay)."""
    for name in kind.outputs:
        path = Path(directory) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def claim_run_dir(
    directory: str | Path, settings: Mapping, overwrite: bool = False, kind: RunKind = TRAINING_RUN
) -> bool:
    """Make ``directory`` the output of the run described by ``settings`` (JSON-able).

    Holding this run: nothing to do, True (the caller resumes). Holding no run: record
    ``settings`` in ``run.json``, False. Holding another run: :func:`check_run_dir`'s error,
    unless ``overwrite``, which deletes the run outputs (only those) and records ``settings``.
    """
    directory = Path(directory)
    if not overwrite and check_run_dir(directory, settings, kind=kind):
        return True
    clear_run_dir(directory, kind)
    directory.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps(settings))
    record = settings if kind.flat else {"format": RUN_FORMAT, "settings": settings}
    (directory / RUN_FILE).write_text(json.dumps(record, indent=kind.indent) + "\n")
    return False
