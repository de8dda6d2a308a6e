"""Content hash of a model (parameter/buffer names, shapes, dtypes and values)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def model_hash(model: nn.Module) -> str:
    """sha256 (first 16 hex digits) over the state dict, so a schedule is tied to one checkpoint."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
