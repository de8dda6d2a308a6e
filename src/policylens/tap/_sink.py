"""The sink of one tap: turns each tensor a hook sees into a stored record. Query / key positions
(``_Rows``) are worked out once per length and device; heads and token positions are sliced before
the copy; the record is cast and moved (device → pinned CPU memory with a non-blocking copy and a
recorded CUDA event), or with ``keep_graph`` kept as the module's own tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._names import TapPoint

if TYPE_CHECKING:
    from ._capture import Capture

__all__ = ["Sink"]


class _Rows:
    """The positions a selector (a slice, integer positions or a boolean mask over positions) keeps
    of a call's ``length``, positions past it dropped; worked out once per length and device for the
    whole capture (no ``nonzero`` / host sync per flow step)."""

    def __init__(self, index: slice | Tensor | Sequence[int]) -> None:
        self.index, self._cache = index, {}

    def __call__(self, length: int, device: torch.device) -> Tensor:
        key = (length, device)
        if key not in self._cache:
            idx = self.index
            if isinstance(idx, slice):
                idx = torch.arange(length, device=device)[idx]
            else:
                idx = torch.as_tensor(idx, device=device)
                idx = idx[:length].nonzero().flatten() if idx.dtype == torch.bool else idx[idx < length]
            self._cache[key] = idx
        return self._cache[key]


def _select(t: Tensor, dim: int, rows: _Rows) -> Tensor:
    """``t`` restricted to ``rows`` along ``dim`` (a view for a slice)."""
    if isinstance(rows.index, slice):
        return t[(slice(None),) * dim + (rows.index,)]
    return t.index_select(dim, rows(t.shape[dim], t.device))


class Sink:
    """Turns one hooked tensor into a stored record: slice, cast, copy."""

    def __init__(self, cap: Capture, point: TapPoint, dtype, device, positions, heads, counter, block=None,
                 keep_graph=False, on_record=None) -> None:  # fmt: skip
        self.cap, self.point, self.dtype, self.device = cap, point, dtype, torch.device(device)
        self.positions, self.heads, self.counter = positions, heads, counter
        self.queries, self.keys = (None if q is None else _Rows(q) for q in (block or (None, None)))
        self.keep_graph, self.on_record = keep_graph, on_record

    def query_rows(self, length: int, device: torch.device) -> Tensor | None:
        """The query positions this sink keeps of a call with ``length`` queries (None: all)."""
        return None if self.queries is None else self.queries(length, device)

    def _stored(self, tensor: Tensor, event: torch.cuda.Event | None) -> None:
        self.cap._add(self.point.name, tensor, event)
        if self.on_record is not None:
            self.on_record(self.point.name)
        self.counter.fired(self.point.name)

    def __call__(self, tensor: Tensor, rows_done: bool = False) -> None:
        """Store ``tensor``; ``rows_done``: its query rows are already those :meth:`query_rows` names."""
        t = tensor if self.keep_graph else tensor.detach()
        if self.point.kind == "probs":
            if self.heads is not None:
                t = t[:, self.heads]
            if self.queries is not None and not rows_done:
                t = _select(t, 2, self.queries)
            if self.keys is not None:
                t = _select(t, 3, self.keys)
        elif self.positions is not None:
            t = t[:, self.positions]
        if self.keep_graph:  # the autograd graph stays: no copy, no cast, no move
            self._stored(t, None)
            return
        dtype = self.dtype or t.dtype
        event = None
        if t.device.type == "cuda" and self.device.type == "cpu":
            out = torch.empty(t.shape, dtype=dtype, pin_memory=True)
            out.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            out = t.to(device=self.device, dtype=dtype)
            if out.data_ptr() == tensor.data_ptr():
                out = out.clone()
        self._stored(out, event)
