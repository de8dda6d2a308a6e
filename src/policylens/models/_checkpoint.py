"""Policy checkpoints: ``config.json`` (with a ``type``) + ``model.safetensors``.

``load_policy`` reads the type and dispatches through a registry, so every policy class
(TinyVLA, TinyDiffusionPolicy, user classes) loads with one call. No pickle anywhere.
A truncated or foreign weights file, or weights that do not fit the config, raise one
``ValueError`` naming the file and the fix (``read_safetensors``), never a bare ``SafetensorError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_model
from torch import Tensor, nn

from .._jsonfile import read_json_file
from ._hf_compat import align_state_dict

__all__ = [
    "check_safetensors",
    "list_policy_names",
    "list_policy_types",
    "load_policy",
    "read_safetensors",
    "register_policy_name",
    "register_policy_type",
    "save_policy",
]

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
REFETCH = "re-save or re-download it"

# type -> (build from config dict, config of a model instance)
_TYPES: dict[str, tuple[Callable[[dict], nn.Module], Callable[[nn.Module], dict]]] = {}
_BUILTIN: dict[str, Callable[[], nn.Module]] = {}


def register_policy_type(
    name: str,
    build: Callable[[dict], nn.Module],
    config_of: Callable[[nn.Module], dict],
    default: Callable[[], nn.Module] | None = None,
) -> None:
    """Register a policy class: ``build(config_dict) -> model`` and ``config_of(model) -> dict``.
    ``default`` makes ``load_policy(name)`` build (or load) a ready instance."""
    _TYPES[name] = (build, config_of)
    if default is not None:
        _BUILTIN[name] = default


def register_policy_name(name: str, load: Callable[[], nn.Module]) -> None:
    """Make ``load_policy(name)`` return ``load()``: a shipped checkpoint under a short name
    (``metaworld/pick-place-v3``). A directory of that name, if one exists, still wins."""
    _BUILTIN[name] = load


def list_policy_types() -> list[str]:
    return sorted(_TYPES)


def list_policy_names() -> list[str]:
    """The names ``load_policy`` accepts besides a checkpoint directory."""
    return sorted(_BUILTIN)


def _type_of(model: nn.Module) -> str:
    for name, (_build, config_of) in _TYPES.items():
        try:
            config_of(model)
        except (TypeError, AttributeError):
            continue
        return name
    raise TypeError(f"save_policy: {type(model).__name__} is not a registered policy type ({list_policy_types()})")


def save_policy(model: nn.Module, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kind = _type_of(model)
    config = {"type": kind, **_TYPES[kind][1](model)}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_model(model, str(directory / WEIGHTS_FILE))
    return directory


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


def _short(exc: Exception, limit: int = 240) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_policy(path: str | Path) -> nn.Module:
    """A policy from a checkpoint directory, or a built-in name (``list_policy_types()``)."""
    if str(path) in _BUILTIN and not Path(path).exists():
        return _BUILTIN[str(path)]()
    directory = Path(path)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"load_policy: {config_path} does not exist. Pass a checkpoint directory holding {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, or a built-in name: {sorted(_BUILTIN)}"
        )
    config = read_json_file(config_path, f"a policy checkpoint config ({CONFIG_FILE} with a 'type' field)")
    kind = config.get("type")
    if kind not in _TYPES:
        raise ValueError(f"load_policy: {config_path} field 'type'={kind!r} is not one of {list_policy_types()}")
    model = _TYPES[kind][0]({k: v for k, v in config.items() if k != "type"})
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"load_policy: {weights} is missing (the weights beside {config_path})")
    state = align_state_dict(read_safetensors(weights), model.state_dict().keys())
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing / unexpected keys, other shapes
        raise ValueError(
            f"load_policy: {weights} does not fit {config_path} ({_short(exc)}); re-save both with save_policy"
        ) from exc
    return model.eval()
