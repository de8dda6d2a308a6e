"""The registry of policy types a checkpoint's ``config.json`` may name in its ``type`` field.

A type registers how to build a model from its config and how to read the config back off a model
(``register_policy_type``); a shipped checkpoint registers a short name (``register_policy_name``).
The packages that define policies register them when imported; this module names none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = [
    "PolicyType",
    "list_policy_names",
    "list_policy_types",
    "policy_type",
    "policy_type_of",
    "register_policy_name",
    "register_policy_type",
]

RenameState = Callable[[dict[str, Tensor], Collection[str]], dict[str, Tensor]]


@dataclass(frozen=True)
class PolicyType:
    """``build(config) -> model``, ``config_of(model) -> config`` (raises ``TypeError`` for another class),
    ``rename_state(state, model_keys) -> state``: saved weights under the keys the model has now
    (e.g. where a library release moved a submodule), applied before loading weights or a train state."""

    name: str
    build: Callable[[dict], nn.Module]
    config_of: Callable[[nn.Module], dict]
    rename_state: RenameState | None = None


_TYPES: dict[str, PolicyType] = {}
_NAMES: dict[str, Callable[[], nn.Module]] = {}


def register_policy_type(
    name: str,
    build: Callable[[dict], nn.Module],
    config_of: Callable[[nn.Module], dict],
    default: Callable[[], nn.Module] | None = None,
    rename_state: RenameState | None = None,
) -> None:
    """Register a policy class: ``build(config_dict) -> model`` and ``config_of(model) -> dict``.
    ``default`` makes ``load_checkpoint(name)`` build (or load) a ready instance; ``rename_state``:
    see :class:`PolicyType`."""
    _TYPES[name] = PolicyType(name, build, config_of, rename_state)
    if default is not None:
        _NAMES[name] = default


def register_policy_name(name: str, load: Callable[[], nn.Module]) -> None:
    """Make ``load_checkpoint(name)`` return ``load()``: a shipped checkpoint under a short name
    (``metaworld/pick-place-v3``). A directory of that name, if one exists, still wins."""
    _NAMES[name] = load


def list_policy_types() -> list[str]:
    """The ``type`` values a checkpoint's ``config.json`` may hold."""
    return sorted(_TYPES)


def list_policy_names() -> list[str]:
    """The names ``load_checkpoint`` accepts besides a checkpoint directory."""
    return sorted(_NAMES)


def policy_type(name: str) -> PolicyType:
    """The registered type ``name``; ``KeyError`` naming the registered ones otherwise."""
    if name not in _TYPES:
        raise KeyError(f"policy type {name!r} is not registered ({list_policy_types()})")
    return _TYPES[name]


def policy_type_of(model: nn.Module) -> PolicyType | None:
    """The registered type whose ``config_of`` accepts ``model`` (None if none does)."""
    for kind in _TYPES.values():
        try:
            kind.config_of(model)
        except (TypeError, AttributeError):
            continue
        return kind
    return None


def named_policy(name: str) -> Callable[[], nn.Module] | None:
    """The loader registered under ``name`` (a type's default or a shipped checkpoint), or None."""
    return _NAMES.get(name)
