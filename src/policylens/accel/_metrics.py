"""Step-by-step similarity of cached features: cosine (similarity) and l1 / l2 / mse (distances)."""

from __future__ import annotations

import torch
from torch import Tensor


def step_matrices(feats: Tensor, metrics: tuple[str, ...]) -> dict[str, Tensor]:
    """feats (K, B, F) -> {metric: (K, K)} averaged over the B samples (float64).

    cosine: <f_a, f_t> / (|f_a| |f_t|); l1: mean |f_a - f_t|; l2: |f_a - f_t|_2; mse: mean (f_a - f_t)².
    """
    x = feats.to(torch.float64).transpose(0, 1).contiguous()  # (B, K, F)
    F = x.shape[-1]
    out: dict[str, Tensor] = {}
    if "cosine" in metrics:
        n = torch.nn.functional.normalize(x, dim=-1)
        out["cosine"] = (n @ n.transpose(1, 2)).mean(0)  # (K, K)
    if "l1" in metrics:
        out["l1"] = (torch.cdist(x, x, p=1) / F).mean(0)
    if "l2" in metrics or "mse" in metrics:
        d2 = torch.cdist(x, x, p=2)  # (B, K, K)
        if "l2" in metrics:
            out["l2"] = d2.mean(0)
        if "mse" in metrics:
            out["mse"] = (d2.square() / F).mean(0)
    return out
