"""``probe_taps``: which tap points fire on which entry point of a model.

A tap can exist (its module is there) and still never run: a model may call a layer's pieces
instead of the layer, or an entry point may skip a component (the action expert in a
prefix-only pass). ``probe_taps`` runs each entry point once under a capture of every tap —
keeping one position, one head and one query/key of each, in float16, so the probe copies
almost nothing — and reports, per tap, the entry points on which it fired and how often.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ._capture import capture
from ._names import list_taps

__all__ = ["example_entry_points", "probe_taps"]


def probe_taps(model: nn.Module, entry_points: Mapping[str, Callable[[], Any]]) -> dict[str, dict[str, int]]:
    """``{tap name: {entry point: calls}}`` for every tap of ``model`` (0 calls are left out)."""
    names = [t.name for t in list_taps(model)]
    fired: dict[str, dict[str, int]] = {n: {} for n in names}
    tiny = {"positions": slice(0, 1), "heads": [0], "queries": slice(0, 1), "keys": slice(0, 1)}
    for label, run in entry_points.items():
        with torch.no_grad(), capture(model, names, dtype="float16", missing="ignore", **tiny) as cap:
            run()
        for n in names:
            calls = len(cap.calls(n))
            if calls:
                fired[n][label] = calls
    return fired


def example_entry_points(model: nn.Module) -> dict[str, Callable[[], Any]]:
    """Entry points of a model that can make its own inputs (``example_batch``): inference
    (``forward`` without labels) and training (``forward`` with ``action``); {} otherwise."""
    make = getattr(model, "example_batch", None)
    if make is None:
        return {}
    batch = make(batch_size=1)
    points = {"inference": lambda: model(**batch)}
    try:
        train = make(batch_size=1, with_action=True)
    except TypeError:
        return points
    points["training"] = lambda: model(**train)
    return points
