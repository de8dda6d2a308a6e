"""Which weights a calibration belongs to: ``model_hash`` is the one weights hash,
``policylens.runs.weights_hash`` (``"sha256:<hex>"``). Calibrations written before it recorded the
first 16 hex digits of another sha256 over the state dict; :func:`calibration_hash` computes that
one for them, so they keep loading and keep refusing other weights."""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn

from ..runs import weights_hash

__all__ = ["calibration_hash", "legacy_model_hash", "model_hash"]

model_hash = weights_hash  # the name accel has always exported
_LEGACY = re.compile(r"[0-9a-f]{16}")


def legacy_model_hash(model: nn.Module) -> str:
    """The hash calibrations recorded before ``weights_hash``: sha256 (first 16 hex digits) over each
    state-dict entry's name, dtype, flattened shape and bytes, names sorted."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def calibration_hash(model: nn.Module, recorded: str) -> str:
    """``model``'s hash in the form ``recorded`` has: the legacy 16 hex digits, or ``weights_hash``."""
    return legacy_model_hash(model) if _LEGACY.fullmatch(recorded) else weights_hash(model)
