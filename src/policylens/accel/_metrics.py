"""Step-by-step similarity of cached features: cosine (similarity) and l1 / l2 / mse (distances).

The l1 matrix dominated calibration time as a float64 ``cdist``; it is built one row of the upper
triangle at a time in the features' own float32 (a third of the time on one thread) and mirrored.
Its sums over F stay in float32 (relative error ~1e-7, below the 6 decimals a calibration stores);
the mean over samples and everything after it is float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["step_matrices"]


def _l1(x: Tensor) -> Tensor:
    """x (B, K, F) float32 or float64 -> (K, K) float64: mean |x_a - x_t| over F, averaged over B."""
    K, F = x.shape[1:]
    out = torch.zeros(K, K, dtype=torch.float64)
    for a in range(K):
        row = (x[:, a : a + 1] - x[:, a:]).abs().sum(-1).to(torch.float64).mean(0) / F  # (K - a,)
        out[a, a:] = row
        out[a:, a] = row
    return out


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
        low = feats if feats.dtype == torch.float64 else feats.float()
        out["l1"] = _l1(low.transpose(0, 1).contiguous())
    if "l2" in metrics or "mse" in metrics:
        d2 = torch.cdist(x, x, p=2)  # (B, K, K)
        if "l2" in metrics:
            out["l2"] = d2.mean(0)
        if "mse" in metrics:
            out["mse"] = (d2.square() / F).mean(0)
    return out
