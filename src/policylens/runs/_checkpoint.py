"""One checkpoint format: a directory holding ``config.json`` + ``model.safetensors``. No pickle.

A policy's ``config.json`` names its ``type``; :func:`load_checkpoint` builds it through the type
registry (``_policy_registry``), so every policy class loads with one call. Other checkpoints (the
alignment job's models) carry a ``format`` and are read with :func:`read_checkpoint`. A missing file,
a damaged ``config.json``, a truncated or foreign weights file, or weights that do not fit the config
raise one error naming the file and the fix, never a bare ``SafetensorError`` or ``JSONDecodeError``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model
from torch import Tensor, nn

from .._jsonfile import read_json_file
from ._policy_registry import (
    PolicyType,
    list_policy_names,
    list_policy_types,
    named_policy,
    policy_type,
    policy_type_of,
)

__all__ = [
    "CONFIG_FILE",
    "REFETCH",
    "WEIGHTS_FILE",
    "check_safetensors",
    "fit_state",
    "load_checkpoint",
    "read_checkpoint",
    "read_checkpoint_config",
    "read_safetensors",
    "save_checkpoint",
]

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
REFETCH = "re-save or re-download it"  # the fix named for a damaged checkpoint file


def _damaged(path: str | Path, exc: Exception, fix: str) -> ValueError:
    return ValueError(f"{path} is damaged (truncated or not a safetensors file: {exc}); {fix}")


def read_safetensors(path: str | Path, fix: str = REFETCH) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a truncated or foreign file raises a ``ValueError`` that
    names it and ends with ``fix``."""
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise _damaged(path, exc, fix) from exc


def check_safetensors(path: str | Path, fix: str = REFETCH) -> None:
    """Read only the header of a safetensors file (cheap) and raise as :func:`read_safetensors` does
    when it is truncated or not a safetensors file."""
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as exc:
        raise _damaged(path, exc, fix) from exc


def save_checkpoint(model: nn.Module, directory: str | Path, config: dict | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (``model``'s state dict) into ``directory``.
    ``config``: what ``config.json`` holds; by default the registered policy type's config of ``model``
    with its ``type``."""
    directory = Path(directory)
    if config is None:
        kind = policy_type_of(model)
        if kind is None:
            raise TypeError(
                f"save_checkpoint: {type(model).__name__} is not a registered policy type ({list_policy_types()}); "
                "register it with register_policy_type, or pass config="
            )
        config = {"type": kind.name, **kind.config_of(model)}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_model(model, str(directory / WEIGHTS_FILE), force_contiguous=True)
    return directory


def read_checkpoint_config(
    directory: str | Path, *, format: str | None = None, what: str | None = None, hint: str = ""
) -> dict:
    """``config.json`` of the checkpoint in ``directory``, whose weights must be there too; with ``format``,
    its ``format`` field must equal it. A missing file raises ``FileNotFoundError`` naming ``what`` (the
    directory by default) and ending with ``hint`` (e.g. which command writes the checkpoint)."""
    directory = Path(directory)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
    if missing:
        label = what or str(directory)
        hint = hint or f"a checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}"
        raise FileNotFoundError(f"{label} has no {' + '.join(missing)}; {hint}")
    expected = f"a checkpoint config ({CONFIG_FILE})" if format is None else f"a {format} checkpoint config"
    config = read_json_file(directory / CONFIG_FILE, expected)
    if format is not None and config.get("format") != format:
        raise ValueError(f"{directory / CONFIG_FILE} has format {config.get('format')!r}; expected {format!r}")
    return config


def read_checkpoint(
    directory: str | Path, *, format: str | None = None, what: str | None = None, hint: str = "", fix: str = REFETCH
) -> tuple[dict, dict[str, Tensor]]:
    """``(config, tensors)`` of the checkpoint in ``directory`` (:func:`read_checkpoint_config`; a damaged
    weights file raises a ``ValueError`` naming it and ending with ``fix``)."""
    config = read_checkpoint_config(directory, format=format, what=what, hint=hint)
    return config, read_safetensors(Path(directory) / WEIGHTS_FILE, fix=fix)


def _short(exc: Exception, limit: int = 240) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fit_state(model: nn.Module, state: dict[str, Tensor], kind: PolicyType | None = None) -> dict[str, Tensor]:
    """``state`` under ``model``'s keys: renamed by ``kind`` (by default the registered type of ``model``)
    if that type renames, else as it is."""
    kind = kind or policy_type_of(model)
    if kind is None or kind.rename_state is None:
        return state
    return kind.rename_state(state, model.state_dict().keys())


def load_checkpoint(path: str | Path) -> nn.Module:
    """A policy from a checkpoint directory (its ``config.json`` names a registered ``type``), or a
    registered name (``list_policy_names()``), in eval mode."""
    load = named_policy(str(path))
    if load is not None and not Path(path).exists():
        return load()
    directory = Path(path)
    config_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist. Pass a checkpoint directory holding {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, or a built-in name: {list_policy_names()}"
        )
    config = read_json_file(config_path, f"a policy checkpoint config ({CONFIG_FILE} with a 'type' field)")
    name = config.get("type")
    if name not in list_policy_types():
        raise ValueError(f"{config_path} field 'type'={name!r} is not one of {list_policy_types()}")
    kind = policy_type(name)
    model = kind.build({k: v for k, v in config.items() if k != "type"})
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing (the weights beside {config_path})")
    try:
        model.load_state_dict(fit_state(model, read_safetensors(weights), kind))
    except RuntimeError as exc:  # missing / unexpected keys, other shapes
        raise ValueError(
            f"{weights} does not fit {config_path} ({_short(exc)}); re-save both with save_checkpoint"
        ) from exc
    return model.eval()
