"""Tap-point names: one grammar, resolved against a model's adapter.

Grammar (``{i}`` may be negative, counted from the end)::

    {component}.layers.{i}.in          input hidden states of block i   (B, T, D)
    {component}.layers.{i}.out         output hidden states of block i  (B, T, D)
    {component}.layers.{i}.attn.out    attention branch output          (B, T, D)
    {component}.layers.{i}.attn.probs  attention probabilities          (B, H, Tq, Tk)
    {component}.layers.{i}.mlp.out     MLP branch output                (B, T, D)
    {component}.norm.out               final norm output                (B, T, D)
    {extra}.out                        an extra module's output (e.g. ``projector.out``)

:func:`tap_name` builds these names; nothing else formats them by hand.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass

from torch import nn

from ._adapter import Adapter, Component, get_adapter, resolve_module

__all__ = ["LAYER_POINTS", "TapInfo", "TapPoint", "list_taps", "resolve_taps", "tap_name"]

LAYER_POINTS = ("in", "out", "attn.out", "attn.probs", "mlp.out")
OTHER_POINTS = ("norm.out", "out")  # a component's final norm; an extra module


def tap_name(component: str, layer: int | None, point: str = "out") -> str:
    """The tap name of ``point`` in block ``layer`` of ``component`` (``layer`` may be negative):
    ``tap_name("llm", -2)`` -> ``"llm.layers.-2.out"``, ``tap_name("expert", 3, "attn.probs")`` ->
    ``"expert.layers.3.attn.probs"``. ``layer=None`` names a point outside the blocks:
    ``tap_name("llm", None, "norm.out")`` -> ``"llm.norm.out"``, ``tap_name("projector", None)``
    -> ``"projector.out"``."""
    if not isinstance(component, str) or not component or "." in component:
        raise ValueError(f"tap_name: component={component!r}; expected a component name without dots (e.g. 'llm')")
    if layer is None:
        if point not in OTHER_POINTS:
            raise ValueError(f"tap_name: point={point!r} with layer=None; expected one of {OTHER_POINTS}")
        return f"{component}.{point}"
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise ValueError(f"tap_name: layer={layer!r}; expected an integer block index (negative counts from the end)")
    if point not in LAYER_POINTS:
        raise ValueError(f"tap_name: point={point!r}; expected one of {LAYER_POINTS}")
    return f"{component}.layers.{int(layer)}.{point}"


@dataclass(frozen=True)
class TapInfo:
    """A tap point as listed by :func:`list_taps`."""

    name: str
    module_path: str
    shape: str


@dataclass(frozen=True)
class TapPoint:
    """A tap name resolved to a module and a hook kind (``in``, ``out`` or ``probs``)."""

    name: str
    canonical: str
    module_path: str
    module: nn.Module
    kind: str
    component: Component | None
    layer: int | None


def _layers(model: nn.Module, comp: Component) -> tuple[str, nn.ModuleList]:
    return resolve_module(model, comp.layers, f"component {comp.name!r}")


def _width(module: nn.Module) -> str:
    """Output width: the last Linear's out_features, else a norm's weight length."""
    for sub in reversed(list(module.modules())):
        if isinstance(sub, nn.Linear):
            return f"D={sub.out_features}"
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 1:
        return f"D={weight.shape[0]}"
    return "D"


def _heads(module: nn.Module) -> str:
    for attr in ("num_heads", "num_attention_heads"):
        value = getattr(module, attr, None) or getattr(getattr(module, "config", None), attr, None)
        if isinstance(value, int):
            return f"H={value}"
    return "H"


def _piece_points(model: nn.Module, comp: Component, path: str, layers: nn.ModuleList, i: int) -> list[tuple]:
    """``in``, ``out`` and ``attn.out`` of block ``i`` of a component whose model calls the
    block's pieces (see :class:`Component`): block inputs are ``input_norm`` inputs."""
    n = len(layers)
    if i + 1 < n:
        out_path, out_module = f"{path}.{i + 1}.{comp.input_norm}", layers[i + 1].get_submodule(comp.input_norm)
    else:
        out_path, out_module = resolve_module(model, comp.norm, f"{comp.name} final norm")
    attn_out, norm_in = layers[i].get_submodule(comp.attn_out), layers[i].get_submodule(comp.input_norm)
    return [
        (tap_name(comp.name, i, "in"), f"{path}.{i}.{comp.input_norm}", norm_in, "in", comp, i),
        (tap_name(comp.name, i, "out"), out_path, out_module, "in", comp, i),
        (tap_name(comp.name, i, "attn.out"), f"{path}.{i}.{comp.attn_out}", attn_out, "out", comp, i),
    ]


def _points_of(
    model: nn.Module, adapter: Adapter
) -> list[tuple[str, str, nn.Module, str, Component | None, int | None]]:
    """(canonical name, module path, module, kind, component, layer) for every tap point, in order."""
    points = []
    for comp in adapter.components:
        path, layers = _layers(model, comp)
        for i, block in enumerate(layers):
            if comp.calls == "pieces":
                points.extend(_piece_points(model, comp, path, layers, i))
            else:
                points.append((tap_name(comp.name, i, "in"), f"{path}.{i}", block, "in", comp, i))
                points.append((tap_name(comp.name, i, "out"), f"{path}.{i}", block, "out", comp, i))
            if comp.attn and comp.calls == "module":
                attn = block.get_submodule(comp.attn)
                points.append((tap_name(comp.name, i, "attn.out"), f"{path}.{i}.{comp.attn}", attn, "out", comp, i))
            if comp.attn and comp.attention != "none":
                core_name, core = _attention_core(block, comp)
                points.append((tap_name(comp.name, i, "attn.probs"), f"{path}.{i}.{core_name}", core, "probs", comp, i))
            if comp.mlp:
                mlp = block.get_submodule(comp.mlp)
                points.append((tap_name(comp.name, i, "mlp.out"), f"{path}.{i}.{comp.mlp}", mlp, "out", comp, i))
        if comp.norm:
            norm_path, norm = resolve_module(model, comp.norm, f"{comp.name} final norm")
            points.append((tap_name(comp.name, None, "norm.out"), norm_path, norm, "out", comp, None))
    for extra, paths in adapter.extras.items():
        path, module = resolve_module(model, paths, f"extra {extra!r}")
        points.append((tap_name(extra, None), path, module, "out", None, None))
    return points


def _attention_core(block: nn.Module, comp: Component) -> tuple[str, nn.Module]:
    """The submodule that computes the probabilities. For HF models it is the module handed
    to the attention function, the one holding ``config``; some transformers 4.x models
    (DINOv2, ViT) wrap it one level deeper than 5.x does, so look inside when needed."""
    name = comp.attn_core or comp.attn
    core = block.get_submodule(name)
    if comp.attention == "hf" and not hasattr(core, "config"):
        for sub_name, sub in core.named_modules():
            if sub_name and hasattr(sub, "config"):
                return f"{name}.{sub_name}", sub
    return name, core


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module ``torch.compile(model)`` wraps (taps live on its submodules; the compiled
    wrapper runs them, hooks included), or ``model`` itself."""
    return getattr(model, "_orig_mod", model)


def list_taps(model: nn.Module) -> list[TapInfo]:
    """Every tap point of ``model`` in a fixed order, with module path and shape."""
    model = unwrap_compiled(model)
    adapter = get_adapter(model)
    infos = []
    for name, path, module, kind, _comp, _layer in _points_of(model, adapter):
        shape = f"(B, {_heads(module)}, Tq, Tk)" if kind == "probs" else f"(B, T, {_width(module)})"
        infos.append(TapInfo(name=name, module_path=path, shape=shape))
    return infos


def _canonical(name: str, model: nn.Module, adapter: Adapter) -> str:
    parts = name.split(".")
    if len(parts) >= 4 and parts[1] == "layers":
        try:
            index = int(parts[2])
        except ValueError:
            return name
        try:
            comp = adapter.component(parts[0])
        except KeyError:
            return name
        n = len(_layers(model, comp)[1])
        if -n <= index < n:
            parts[2] = str(index % n)
    return ".".join(parts)


def _layer_hint(name: str, model: nn.Module, adapter: Adapter) -> str:
    """' llm has 4 layers: indices 0..3 (or -4..-1).' when ``name`` indexes past a component's layers."""
    parts = name.split(".")
    if len(parts) < 3 or parts[1] != "layers":
        return ""
    try:
        index, comp = int(parts[2]), adapter.component(parts[0])
    except (ValueError, KeyError):
        return ""
    n = len(_layers(model, comp)[1])
    if -n <= index < n:
        return ""
    return f" {comp.name} has {n} layers: indices 0..{n - 1} (or -{n}..-1)."


def resolve_taps(model: nn.Module, taps: list[str] | tuple[str, ...]) -> list[TapPoint]:
    """Resolve tap names (negative layer indices allowed) to modules; unknown names fail
    with the closest valid names."""
    model = unwrap_compiled(model)
    if isinstance(taps, str):
        taps = [taps]
    adapter = get_adapter(model)
    table = {p[0]: p for p in _points_of(model, adapter)}
    resolved = []
    for name in taps:
        canonical = _canonical(name, model, adapter)
        if canonical not in table:
            close = difflib.get_close_matches(canonical, list(table), n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise KeyError(
                f"tap {name!r} does not exist on {type(model).__name__} (adapter {adapter.name!r})."
                f"{_layer_hint(name, model, adapter)}{hint} "
                f"`policylens taps` or policylens.tap.list_taps(model) lists all {len(table)} tap points."
            )
        _, path, module, kind, comp, layer = table[canonical]
        resolved.append(TapPoint(name, canonical, path, module, kind, comp, layer))
    return resolved
