"""Adapters: where an architecture keeps its layers, attention modules and token layout.

An :class:`Adapter` names *components* (``vision``, ``llm``, ``expert`` ...), each a
``ModuleList`` of blocks, plus single *extra* modules (``projector``). Tap names are
built from it (see ``_names.py``). Adapters are registered per model class, keyed by
the class's fully qualified name so that optional libraries (LeRobot, VLA-Adapter's
``prismatic``) are never imported just to register them; a key ``"*.module.Class"``
matches ``Class`` in any module whose dotted name ends with ``module`` (remote code that
``trust_remote_code`` loads under a generated package name).

Packages offer adapters through the ``policylens.adapters`` entry-point group: each entry names
a module whose import registers them (policylens' own: ``policylens.models``' adapter modules,
declared in its ``pyproject.toml``; a third-party package declares its own the same way). They are
imported on the first lookup, each on its own: a family whose module cannot be imported on this
install (an old ``transformers``) is reported in the "no adapter" error and leaves the others working.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["Adapter", "Component", "get_adapter", "list_adapters", "register_adapter", "resolve_module"]

ATTENTION_KINDS = ("hf", "mha", "smolvla", "none")
CALL_KINDS = ("module", "pieces")


@dataclass(frozen=True)
class Component:
    """One stack of blocks.

    ``layers`` lists candidate dotted paths to the ``ModuleList`` (the first that exists
    wins, so one adapter serves several library versions). ``attn`` is the submodule whose
    output is the attention branch; ``attn_core`` the one that computes probabilities
    (for HF models: the module passed to the attention function). ``attention`` says how its
    probabilities are taken: ``"hf"`` (HF attention modules, routed), ``"mha"``
    (``nn.MultiheadAttention``), ``"smolvla"`` (LeRobot's SmolVLA, which computes attention in
    its ``SmolVLMWithExpertModel``; see ``_smolvla_attention.py``) or ``"none"`` (no ``attn.probs``).

    ``calls`` says how the model runs a block. ``"module"``: it calls the block module, so
    hooks on the block give its input and output. ``"pieces"``: it calls the block's parts
    directly (LeRobot's SmolVLA on every path, pi0 / pi0.5 in their joint training pass), so
    the block module never runs; the taps are then taken where the values are observable:
    ``in`` is the input of the block's ``input_norm``, ``out`` the input of the next block's
    ``input_norm`` (the final ``norm``'s input for the last block), ``attn.out`` the output of
    ``attn_out`` (the output projection). These are the same tensors the block would return.
    """

    name: str
    layers: tuple[str, ...]
    attn: str = "self_attn"
    attn_core: str | None = None
    mlp: str = "mlp"
    norm: tuple[str, ...] = ()
    attention: str = "hf"
    sequence: str = "prefix"
    calls: str = "module"
    input_norm: str = "input_layernorm"
    attn_out: str = "self_attn.o_proj"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"Component {self.name!r}: attention={self.attention!r} is not one of {ATTENTION_KINDS}.")
        if self.calls not in CALL_KINDS:
            raise ValueError(f"Component {self.name!r}: calls={self.calls!r} is not one of {CALL_KINDS}.")
        if self.calls == "pieces" and not self.norm:
            raise ValueError(
                f"Component {self.name!r}: calls='pieces' takes the last block's output at the final norm's input; "
                "give norm=(<path of the final norm>, ...)."
            )


@dataclass(frozen=True)
class Adapter:
    """Where a model keeps its parts; ``layout(model, batch)`` returns its token spans."""

    name: str
    components: tuple[Component, ...]
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    layout: Callable[[nn.Module, Mapping[str, Any]], Any] | None = None

    def component(self, name: str) -> Component:
        for comp in self.components:
            if comp.name == name:
                return comp
        names = [c.name for c in self.components]
        raise KeyError(f"adapter {self.name!r} has no component {name!r}; it has {names}")


_REGISTRY: dict[str, Callable[[nn.Module], Adapter]] = {}
ENTRY_POINT_GROUP = "policylens.adapters"
_PLUGIN_ERRORS: dict[str, str] = {}  # module -> why it could not be imported
_PLUGIN_STATE = {"loaded": False}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_adapter(cls: type | str, factory: Callable[[nn.Module], Adapter] | Adapter) -> None:
    """Register an adapter for a model class (a class or its fully qualified name).

    ``factory`` is an :class:`Adapter` or a callable ``model -> Adapter`` (for adapters
    whose paths depend on the instance). Subclasses inherit their base's adapter. A name
    ``"*.modeling_x.Model"`` matches ``Model`` from any module ending in ``modeling_x``.
    """
    key = cls if isinstance(cls, str) else _qualname(cls)
    _REGISTRY[key] = factory if callable(factory) and not isinstance(factory, Adapter) else (lambda _m: factory)


def list_adapters() -> list[str]:
    """Fully qualified class names that have an adapter (``*.`` names: in any package)."""
    _load_plugins()
    return sorted(_REGISTRY)


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model``, found by its class or the nearest registered base class."""
    _load_plugins()
    if isinstance(getattr(model, "policylens_adapter", None), Adapter):
        return model.policylens_adapter
    for cls in type(model).__mro__:
        key = _match(_qualname(cls))
        if key is not None:
            return _REGISTRY[key](model)
    supported = "\n  ".join(short for short in sorted(k.rsplit(".", 1)[-1] for k in _REGISTRY))
    failed = "".join(f"\nNot loaded: {name} ({why})" for name, why in _PLUGIN_ERRORS.items())
    raise TypeError(
        f"policylens has no adapter for {_qualname(type(model))}. Supported classes:\n  {supported}{failed}\n"
        "Register one with policylens.tap.register_adapter(YourModel, Adapter(name=..., components=("
        "Component(name='llm', layers=('model.layers',)),))) or set `model.policylens_adapter`."
    )


def resolve_module(root: nn.Module, paths: tuple[str, ...], what: str) -> tuple[str, nn.Module]:
    """The first of ``paths`` that exists under ``root``, as ``(path, module)``."""
    for path in paths:
        try:
            return path, root.get_submodule(path)
        except AttributeError:
            continue
    raise AttributeError(f"{type(root).__name__} has none of the module paths {list(paths)} for {what}")


def _match(qualname: str) -> str | None:
    """The registry key for a class's qualified name: itself, else a ``"*."`` key it ends with."""
    if qualname in _REGISTRY:
        return qualname
    return next((k for k in _REGISTRY if k.startswith("*.") and f".{qualname}".endswith(k[1:])), None)


def adapter_modules() -> list[str]:
    """The modules that the installed packages declare in the ``policylens.adapters`` entry points."""
    from importlib.metadata import entry_points

    return sorted({ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _load_plugins() -> None:
    """Import each module of :func:`adapter_modules` once (their imports register the adapters)."""
    if _PLUGIN_STATE["loaded"]:
        return
    _PLUGIN_STATE["loaded"] = True
    import importlib

    for name in adapter_modules():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            _PLUGIN_ERRORS[name] = f"{type(exc).__name__}: {exc}"
