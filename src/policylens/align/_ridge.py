"""Closed-form ridge regression between 2D and 3D features: the baseline a trained alignment must beat.

``fit_ridge(x, y)`` solves min_W,c ||X W + c - Y||² + λ ||W||² (the intercept c is not penalised) in float64.
With N ≥ D the centred Gram matrix XᵀX (D × D) is accumulated in row chunks and eigendecomposed once, so
every λ on the grid costs one (D × D) product: W(λ) = V diag(1 / (e + λ)) Vᵀ XᵀY. With N < D the dual
XXᵀ (N × N) is used instead. At λ = 0 eigenvalues below a relative tolerance are dropped, which gives the
minimum-norm least-squares solution.

Without ``lam``, λ is the grid value with the lowest validation MSE; the validation rows are a random
``val_fraction`` of the training rows or, with per-row ``episodes``, of the training episodes (frames of
one episode are correlated, so a row split would favour small λ). The map is then refitted on all rows.
``ridge_baseline`` fits both directions and scores them with ``evaluate_alignment``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._retrieval import AlignmentReport, evaluate_alignment

__all__ = ["DEFAULT_LAMS", "RidgeBaseline", "RidgeMap", "fit_ridge", "ridge_baseline"]

DEFAULT_LAMS = tuple(10.0**k for k in range(-3, 7))
_ROW_CHUNK = 8192


@dataclass(frozen=True)
class RidgeMap:
    """y ≈ x @ weight + bias; ``val_mse`` maps each tried λ to its validation MSE (empty when λ was given)."""

    weight: Tensor  # (D_in, D_out) float64
    bias: Tensor  # (D_out,) float64
    lam: float
    val_mse: dict[float, float] = field(default_factory=dict)

    def __call__(self, x) -> Tensor:
        x = torch.as_tensor(x)
        out = x.to(self.weight) @ self.weight + self.bias  # (N, D_out)
        return out.to(x.dtype if x.dtype.is_floating_point else torch.float32)


@dataclass(frozen=True)
class RidgeBaseline:
    """Both ridge maps and their reports: ``"ridge 2d->3d"`` scores (map(a), b), ``"ridge 3d->2d"`` (a, map(b))."""

    a_to_b: RidgeMap
    b_to_a: RidgeMap
    reports: dict[str, AlignmentReport]


def fit_ridge(
    x,
    y,
    *,
    lam: float | None = None,
    lams: Sequence[float] = DEFAULT_LAMS,
    val_fraction: float = 0.2,
    episodes=None,
    seed: int = 0,
) -> RidgeMap:
    """Ridge map from x (N, D_in) to y (N, D_out); λ = ``lam`` or chosen on a validation split from ``lams``."""
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows and y has {y.shape[0]}; rows must be paired")
    if lam is not None:
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam!r}")
        return _fit(x, y, [float(lam)])[0]
    if not lams or any(not v >= 0 for v in lams):
        raise ValueError(f"lams must be a non-empty list of values >= 0, got {lams!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    train, val = _val_split(x.shape[0], val_fraction, episodes, seed)
    maps = _fit(x[train], y[train], [float(v) for v in lams])
    mse = {m.lam: float(((m(x[val]) - y[val]) ** 2).mean()) for m in maps}
    best = min(mse, key=mse.get)
    final = _fit(x, y, [best])[0]
    return RidgeMap(final.weight, final.bias, best, mse)


def ridge_baseline(
    a_train, b_train, a_eval, b_eval, *, lam: float | None = None, episodes=None, **evaluate_kwargs
) -> RidgeBaseline:
    """Fit 2D→3D and 3D→2D ridge maps on the training rows and score the eval rows with ``evaluate_alignment``
    (``evaluate_kwargs``: pool, batch_size, frames, keys, ... of the eval rows; ``episodes`` of the train rows)."""
    a_to_b = fit_ridge(a_train, b_train, lam=lam, episodes=episodes)
    b_to_a = fit_ridge(b_train, a_train, lam=lam, episodes=episodes)
    reports = {
        "ridge 2d->3d": evaluate_alignment(a_to_b(a_eval), b_eval, **evaluate_kwargs),
        "ridge 3d->2d": evaluate_alignment(a_eval, b_to_a(b_eval), **evaluate_kwargs),
    }
    return RidgeBaseline(a_to_b, b_to_a, reports)


def _matrix(x, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0 or not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a non-empty float (N, D) matrix, got {x.dtype} {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values; drop or fix those rows before fitting")
    return x


def _val_split(n: int, frac: float, episodes, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if episodes is None:
        if n < 2:
            raise ValueError(f"choosing lam needs at least 2 rows, got {n}; pass lam=... instead")
        perm = torch.randperm(n, generator=gen)
        k = min(n - 1, max(1, math.ceil(frac * n)))
        return perm[k:], perm[:k]
    ep = torch.as_tensor(episodes).reshape(-1).cpu()
    if ep.numel() != n:
        raise ValueError(f"episodes must hold one id per row ({n}), got {ep.numel()}")
    uniq = torch.unique(ep)
    if uniq.numel() < 2:
        raise ValueError("choosing lam on held-out episodes needs at least 2 episodes; pass lam=... instead")
    k = min(uniq.numel() - 1, max(1, math.ceil(frac * uniq.numel())))
    val_eps = uniq[torch.randperm(uniq.numel(), generator=gen)[:k]]
    is_val = torch.isin(ep, val_eps)
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()


def _fit(x: Tensor, y: Tensor, lams: list[float]) -> list[RidgeMap]:
    """One ridge map per λ from a single eigendecomposition (primal if N >= D_in, dual otherwise)."""
    n, d = x.shape
    dev = x.device
    x_mean = x.double().mean(0)  # (D_in,)
    y_mean = y.double().mean(0)  # (D_out,)
    if n >= d:
        xtx = torch.zeros(d, d, dtype=torch.float64, device=dev)
        xty = torch.zeros(d, y.shape[1], dtype=torch.float64, device=dev)
        for i in range(0, n, _ROW_CHUNK):
            xc = x[i : i + _ROW_CHUNK].double() - x_mean
            xtx += xc.T @ xc
            xty += xc.T @ (y[i : i + _ROW_CHUNK].double() - y_mean)
        e, v = torch.linalg.eigh(xtx)
        vty = v.T @ xty  # (D_in, D_out)
        weights = [v @ (_inv(e, lam)[:, None] * vty) for lam in lams]
    else:
        xc, yc = x.double() - x_mean, y.double() - y_mean
        e, u = torch.linalg.eigh(xc @ xc.T)
        uty = u.T @ yc  # (N, D_out)
        weights = [xc.T @ (u @ (_inv(e, lam)[:, None] * uty)) for lam in lams]
    return [RidgeMap(w, y_mean - x_mean @ w, lam) for w, lam in zip(weights, lams, strict=True)]


def _inv(e: Tensor, lam: float) -> Tensor:
    """1 / (e + λ); at λ = 0 eigenvalues under a relative tolerance are zeroed (the pseudo-inverse)."""
    e = e.clamp(min=0)
    if lam > 0:
        return 1.0 / (e + lam)
    tol = e.max() * e.numel() * torch.finfo(e.dtype).eps
    return torch.where(e > tol, 1.0 / e.clamp(min=torch.finfo(e.dtype).tiny), torch.zeros_like(e))
