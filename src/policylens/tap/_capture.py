"""``capture``: hook only the selected modules and collect their tensors.

Each captured tensor is detached, optionally sliced to the wanted token positions and
heads *before* it is copied, cast, and moved (device → pinned CPU memory with a
non-blocking copy and a recorded CUDA event that is waited on before the tensor is
read). With ``keep_graph`` it is the module's own tensor instead, sliced but not copied,
cast or moved, so a loss on it trains the model. A module called several times in one
forward (a diffusion/flow action expert runs once per denoising step) keeps one record
per call, in call order. Besides tap names, ``modules=`` captures the output of any submodule
by its path (``decoder.layers.0.linear2``): a part the adapter's grammar does not name, such as
one branch of a ``nn.TransformerDecoderLayer``, or a model with no adapter at all.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor, nn

from ._hf_attention import route_probs, routes_eager, unroute_probs
from ._mha_attention import mha_probs
from ._names import TapPoint, resolve_taps, unwrap_compiled
from ._sink import Sink
from ._smolvla_attention import route_smolvla

__all__ = ["Capture", "TapNotFiredError", "TapNotFiredWarning", "capture"]

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MISSING = ("raise", "warn", "ignore")


class TapNotFiredError(RuntimeError):
    """A requested tap fired 0 times during a capture."""


class TapNotFiredWarning(UserWarning):
    """The ``missing="warn"`` form of :class:`TapNotFiredError`."""


class _StopForwardSignal(Exception):
    """Raised by a hook once every tap has fired, when ``stop_early`` is set."""


class Capture:
    """Tensors captured by tap name. ``cap[name]`` is the tensor of a tap that fired once;
    ``cap.calls(name)`` lists every call's tensor, ``cap.stacked(name)`` stacks them."""

    def __init__(self, points: Sequence[TapPoint]) -> None:
        self.points = list(points)
        self._records: dict[str, list[Tensor]] = {p.name: [] for p in points}
        self._events: list[torch.cuda.Event] = []

    def _add(self, name: str, tensor: Tensor, event: torch.cuda.Event | None) -> None:
        self._records[name].append(tensor)
        if event is not None:
            self._events.append(event)

    def synchronize(self) -> None:
        """Wait for pending device → host copies (called before any tensor is handed out)."""
        for event in self._events:
            event.synchronize()
        self._events.clear()

    def calls(self, name: str) -> list[Tensor]:
        self.synchronize()
        if name not in self._records:
            raise KeyError(f"tap {name!r} was not captured; captured taps: {list(self._records)}")
        return list(self._records[name])

    def stacked(self, name: str) -> Tensor:
        """All calls of ``name`` stacked on a new leading axis ``(n_calls, ...)``."""
        return torch.stack(self.calls(name))

    def __getitem__(self, name: str) -> Tensor:
        records = self.calls(name)
        if len(records) != 1:
            raise KeyError(
                f"tap {name!r} fired {len(records)} times in this capture; use cap.calls({name!r}) "
                f"for one tensor per call (e.g. per denoising step) or cap.stacked({name!r})."
            )
        return records[0]

    def keys(self) -> list[str]:
        return list(self._records)

    def items(self) -> Iterator[tuple[str, Tensor]]:
        for name in self._records:
            yield name, self[name]

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        """Drop captured tensors (e.g. between batches) while the hooks stay in place."""
        self.synchronize()
        for records in self._records.values():
            records.clear()


def _first_tensor(obj: object) -> Tensor:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        return _first_tensor(obj[0])
    if hasattr(obj, "to_tuple"):
        return _first_tensor(obj.to_tuple())
    raise TypeError(f"cannot find a tensor in a module output of type {type(obj).__name__}")


def _input_tensor(args: tuple, kwargs: dict) -> Tensor:
    if args:
        return _first_tensor(args)
    for key in ("hidden_states", "x", "src", "tgt", "query", "input"):
        if key in kwargs:
            return kwargs[key]
    raise TypeError(f"cannot find the input hidden states among keyword arguments {list(kwargs)}")


def _for(selector, name: str):
    """The selector of tap ``name`` when ``selector`` maps tap names to selectors."""
    return selector.get(name) if isinstance(selector, Mapping) else selector


class _Counter:
    """Calls each tap still waits for; ``stop_early`` ends the forward once none waits. ``calls``:
    tap name -> calls to wait for (a tap it does not name waits for one)."""

    def __init__(self, names: list[str], stop_early: bool, calls: Mapping[str, int] | None = None) -> None:
        self.pending = {name: (calls or {}).get(name, 1) for name in names}
        self.stop_early = stop_early

    def fired(self, name: str) -> None:
        left = self.pending.pop(name, 1) - 1
        if left > 0:
            self.pending[name] = left
        if self.stop_early and not self.pending:
            raise _StopForwardSignal


def _stop_after(stop_early: bool | Mapping[str, int], names: list[str]) -> Mapping[str, int] | None:
    """The per-tap call counts of ``stop_early`` given as a mapping (None for a bool), checked."""
    if not isinstance(stop_early, Mapping):
        return None
    unknown = sorted(set(stop_early) - set(names))
    if unknown:
        raise ValueError(f"capture: stop_early names {unknown}, which are not captured; captured: {names}")
    bad = {k: v for k, v in stop_early.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"capture: stop_early={dict(stop_early)!r}; call counts {bad} must be integers >= 1")
    return stop_early


def _module_points(model: nn.Module, modules: Sequence[str] | Mapping[str, str]) -> list[TapPoint]:
    """Output points of submodules given by path (a list: each named by its path; a mapping:
    record name -> path). Paths are looked up on ``model``, then on the module a
    ``torch.compile``-d model wraps."""
    named = dict(modules) if isinstance(modules, Mapping) else {path: path for path in modules}
    roots = list(dict.fromkeys([model, unwrap_compiled(model)]))
    points = []
    for name, path in named.items():
        if not isinstance(name, str) or not isinstance(path, str):
            raise TypeError(f"capture: modules= entry {name!r}: {path!r}; expected module path strings")
        found = [m for m in (_submodule(root, path) for root in roots) if m is not None]
        if not found:
            paths = [p for root in roots for p, _ in root.named_modules() if p]
            close = difflib.get_close_matches(path, paths, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise KeyError(
                f"capture: modules= path {path!r} is not a submodule of {type(model).__name__}.{hint} "
                "model.named_modules() lists the paths."
            )
        points.append(TapPoint(name, path, path, found[0], "out", None, None))
    return points


def _submodule(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _attach(point: TapPoint, sink: Sink, model: nn.Module) -> tuple[object, ...]:
    module = point.module
    if point.kind == "out":
        return (module.register_forward_hook(lambda _m, _a, out: sink(_first_tensor(out))),)
    if point.kind == "in":
        return (module.register_forward_pre_hook(lambda _m, a, kw: sink(_input_tensor(a, kw)), with_kwargs=True),)
    if point.component is not None and point.component.attention == "smolvla":
        return (route_smolvla(unwrap_compiled(model), module, sink),)
    if isinstance(module, nn.MultiheadAttention):

        def pre(m, args, kwargs):
            names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
            call = dict(zip(names, args, strict=False)) | kwargs
            sink(
                mha_probs(
                    m,
                    call["query"],
                    call["key"],
                    call.get("attn_mask"),
                    call.get("key_padding_mask"),
                    bool(call.get("is_causal", False)),
                )
            )

        return (module.register_forward_pre_hook(pre, with_kwargs=True),)
    impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
    if impl == "eager" and not routes_eager(module):  # eager math inline: the module returns the weights
        return (module.register_forward_hook(lambda _m, _a, out: sink(out[1])),)
    if impl in ("eager", "sdpa"):  # routed whichever of the two runs at call time
        route_probs(module, sink, rows=(sink.query_rows, partial(sink, rows_done=True)))
        return (module,)
    raise ValueError(
        f"tap {point.name!r}: attention probabilities need the 'sdpa' or 'eager' attention implementation, "
        f"but {point.module_path} runs {impl!r}. Load the model with attn_implementation='sdpa'."
    )


@contextmanager
def capture(
    model: nn.Module,
    taps: Sequence[str] | str = (),
    *,
    modules: Sequence[str] | Mapping[str, str] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    positions: slice | Tensor | None = None,
    heads: Sequence[int] | Tensor | None = None,
    queries: slice | Tensor | Mapping[str, slice | Tensor] | None = None,
    keys: slice | Tensor | Mapping[str, slice | Tensor] | None = None,
    stop_early: bool | Mapping[str, int] = False,
    missing: str = "raise",
    keep_graph: bool = False,
    on_record: Callable[[str], None] | None = None,
) -> Iterator[Capture]:
    """Capture the named taps during the forward passes run inside the ``with`` block.

    ``dtype``: cast captured tensors (``float16``/``bfloat16``/``float32``; None keeps the
    model's). ``positions``: token positions kept for hidden-state taps (dim 1), sliced
    before the copy. ``heads``: heads kept for ``attn.probs`` taps; ``queries`` / ``keys``:
    the query rows (dim 2) and key columns (dim 3) they keep — e.g. text × image tokens — so
    only that block of the ``(B, H, Tq, Tk)`` map is copied off the device. Each is a slice,
    integer positions or a boolean mask over positions, or a mapping from tap name to one of
    those (different rows per tap: text rows for decoder taps, action rows for expert taps, in
    one forward); positions past a call's length are dropped for that call. ``stop_early``: end the
    forward right after the last tap fired (the rest of the ``with`` body is skipped); a mapping
    from tap name to a number of calls ends it once each named tap fired that many times and
    every other tap once (``{"expert.layers.3.out": 5}``: the expert's first five flow steps).
    ``missing``: what a tap that fired 0 times by the end of the block does — ``"raise"``
    (:class:`TapNotFiredError`, the default: an empty capture is never silent), ``"warn"``
    or ``"ignore"``. ``keep_graph``: hand out the module's own tensors, attached to the autograd
    graph (sliced by ``positions`` / ``heads`` / ``queries`` / ``keys``, never copied, cast or
    moved), so a loss on them back-propagates into the model — a student's features for a
    retention loss, under ``torch.autocast`` and inside ``DistributedDataParallel`` too. It
    cannot be combined with ``dtype`` or a ``device`` other than the model's.

    ``modules``: submodules captured by path besides the taps — a list of paths (each recorded
    under its path) or a mapping from record name to path; each records the module's output (its
    first tensor), one record per call, and needs no adapter. ``on_record(name)``: called after
    each record is stored (e.g. to advance a progress bar once per denoising step).
    """
    if missing not in MISSING:
        raise ValueError(f"capture: missing={missing!r} is not one of {MISSING}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"capture: dtype={dtype!r} is not one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if keep_graph and (dtype is not None or torch.device(device).type != "cpu"):
        raise ValueError(
            "capture: keep_graph=True hands out the model's own tensors; drop dtype= and device= "
            "(cast or move the features yourself, inside the graph)"
        )
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module  # taps live on the wrapped module; the wrapper's forward runs its hooks
    taps = [taps] if isinstance(taps, str) else list(taps)
    points = resolve_taps(model, taps) if taps or not modules else []
    extra = _module_points(model, modules or ())
    twice = sorted({p.name for p in points} & {p.name for p in extra})
    if twice:
        raise ValueError(f"capture: {twice} named both as taps and in modules=; give the modules= records other names")
    points += extra
    cap = Capture(points)
    names = [p.name for p in points]
    counter = _Counter(names, bool(stop_early) or isinstance(stop_early, Mapping), _stop_after(stop_early, names))
    handles: list[object] = []
    try:
        for point in points:
            block = (_for(queries, point.name), _for(keys, point.name))
            sink = Sink(cap, point, dtype, device, positions, heads, counter, block, keep_graph, on_record)
            handles.extend(_attach(point, sink, model))
        yield cap
    except _StopForwardSignal:
        pass
    finally:
        for handle in handles:
            if isinstance(handle, nn.Module):
                unroute_probs(handle)
            else:
                handle.remove()
    cap.synchronize()
    _check_fired(cap, missing)


def _check_fired(cap: Capture, missing: str) -> None:
    silent = [p for p in cap.points if not cap._records[p.name]]
    if not silent or missing == "ignore":
        return
    lines = [
        f"{p.name} ({'attention function handed' if p.kind == 'probs' else 'hooked on'} {p.module_path})"
        for p in silent
    ]
    message = (
        f"{len(silent)} of {len(cap.points)} taps fired 0 times in this capture: {'; '.join(lines)}. "
        "The forward did not run those modules: either this entry point does not use them (e.g. the action "
        "expert in a prefix-only pass, the decoder's attention modules in a joint pass that calls the attention "
        "function itself), or the model calls the pieces of a layer directly instead of the layer module (give its "
        "adapter Component(..., calls='pieces')). Pass missing='warn' or missing='ignore' to allow it."
    )
    if missing == "raise":
        raise TapNotFiredError(message)
    warnings.warn(message, TapNotFiredWarning, stacklevel=3)
