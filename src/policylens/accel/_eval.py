"""Measure a caching mode against the uncached policy: wall-clock per action chunk and action error."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ._config import BACConfig
from ._runtime import apply_cache, cache_info, remove_cache


def load_observations(path: str | Path, key: str = "obs") -> Tensor:
    """Observations (N, n_obs_steps, obs_dim) from a safetensors file (tensor ``key``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"observations file {path} not found; expected a .safetensors with key {key!r}.")
    data = load_file(str(path))
    if key not in data:
        raise KeyError(f"{path} has no tensor {key!r}; it holds {sorted(data)}.")
    return data[key].float()


def random_observations(policy: nn.Module, n: int, seed: int = 0) -> Tensor:
    """n observation windows drawn uniformly inside the policy's fitted obs range (needs ``obs_normalizer``)."""
    norm = getattr(policy, "obs_normalizer", None)
    cfg = getattr(policy, "config", None)
    if norm is None or cfg is None:
        raise ValueError(f"{type(policy).__name__} has no obs_normalizer/config; pass observations explicitly.")
    g = torch.Generator().manual_seed(seed)
    z = torch.rand((n, cfg.n_obs_steps, cfg.obs_dim), generator=g) * 2 - 1  # (N, To, O) in [-1, 1]
    return norm.unnormalize(z)


def predict(policy: nn.Module, obs: Tensor, seed: int, **kwargs) -> Tensor:
    return policy.predict_action(obs, generator=torch.Generator().manual_seed(seed), **kwargs)


def time_calls(fn, calls: int, warmup: int = 2) -> np.ndarray:
    """Seconds per call of ``fn()`` over ``calls`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def action_error(reference: Tensor, actions: Tensor) -> dict[str, float]:
    """MSE and max-abs difference of unnormalised action chunks."""
    d = (actions - reference).double()
    return {"mse": float(d.square().mean()), "max_abs": float(d.abs().max())}


@torch.no_grad()
def evaluate_mode(
    policy: nn.Module, config: BACConfig | None, obs: Tensor, calls: int = 20, seed: int = 0, **predict_kwargs
) -> dict[str, float]:
    """Median / p90 ms per ``predict_action(obs)``, action error vs uncached, fraction of branches skipped."""
    reference = predict(policy, obs, seed)
    if config is not None:
        apply_cache(policy, config)
    try:
        actions = predict(policy, obs, seed, **predict_kwargs)
        times = time_calls(lambda: predict(policy, obs, seed, **predict_kwargs), calls)
        skipped = cache_info(policy).get("skipped_fraction") or 0.0
    finally:
        if config is not None:
            remove_cache(policy)
    return {
        "median_ms": float(np.median(times) * 1e3),
        "p90_ms": float(np.percentile(times, 90) * 1e3),
        "skipped": float(skipped),
        **action_error(reference, actions),
    }
