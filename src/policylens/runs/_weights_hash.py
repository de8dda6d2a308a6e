"""One hash of a model's weights, ``"sha256:<hex>"``: the provenance a feature store's manifest
records and what ties a BAC calibration to one checkpoint. Device-, order- and dtype-view-independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["weights_hash"]


def weights_hash(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over every tensor's name, dtype, shape and bytes, keys sorted.

    The same weights give the same hash on CPU or GPU and whatever the state-dict order;
    bfloat16 tensors are hashed through their 16-bit pattern. Entries that are not tensors are skipped.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.reshape(-1).numpy().tobytes())
    return "sha256:" + h.hexdigest()
