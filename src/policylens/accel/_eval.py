"""Measure a caching mode against the uncached policy: wall-clock per action chunk and action error.

:func:`evaluate_mode` measures one mode; :func:`compare_modes` measures several side by side against
one uncached reference, each with its speed-up over the uncached baseline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..runs import read_safetensors
from ._config import BACConfig
from ._runtime import apply_cache, cache_info, remove_cache

__all__ = [
    "action_error",
    "compare_modes",
    "evaluate_mode",
    "load_observations",
    "predict",
    "random_observations",
    "time_calls",
]


def load_observations(path: str | Path, key: str = "obs", policy: nn.Module | None = None) -> Tensor:
    """Observations (N, n_obs_steps, obs_dim) from a safetensors file (tensor ``key``).

    A damaged file, a missing key, an empty or non-3-d tensor, or (with ``policy``) a shape other
    than the policy's ``(N, n_obs_steps, obs_dim)`` raise an error naming the file.
    """
    path = Path(path)
    expected = f"a .safetensors file with a tensor {key!r} of shape (N, n_obs_steps, obs_dim)"
    if not path.is_file():
        raise FileNotFoundError(f"observations file {path} not found; expected {expected}.")
    data = read_safetensors(path, fix=f"write {expected}, e.g. safetensors.torch.save_file({{{key!r}: obs}}, path)")
    if key not in data:
        raise KeyError(f"{path} has no tensor {key!r}; it holds {sorted(data)}. Expected {expected}.")
    obs = data[key]
    cfg = getattr(policy, "config", None)
    want = (cfg.n_obs_steps, cfg.obs_dim) if hasattr(cfg, "n_obs_steps") and hasattr(cfg, "obs_dim") else None
    if obs.dim() != 3 or len(obs) == 0 or (want is not None and tuple(obs.shape[1:]) != want):
        dims = "n_obs_steps, obs_dim" if want is None else ", ".join(map(str, want))
        raise ValueError(f"{path}: tensor {key!r} has shape {tuple(obs.shape)}; expected (N, {dims}) with N >= 1.")
    obs = obs.float()
    if not torch.isfinite(obs).all():
        raise ValueError(f"{path}: tensor {key!r} holds NaN or inf values; expected finite observations.")
    return obs


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
    policy: nn.Module,
    config: BACConfig | None,
    obs: Tensor,
    calls: int = 20,
    seed: int = 0,
    reference: Tensor | None = None,
    warmup: int = 2,
    **predict_kwargs,
) -> dict[str, float]:
    """Median / p90 ms per ``predict_action(obs)`` over ``calls`` timed calls after ``warmup`` untimed
    ones, action error vs uncached, fraction of branches skipped (``config`` None: the uncached policy).

    ``reference``: the uncached ``predict_action(obs)`` with this ``seed``, when the caller has it
    already (one uncached call less per mode; two for the uncached mode itself).
    """
    if calls < 1 or warmup < 0:
        raise ValueError(f"evaluate_mode: calls={calls}, warmup={warmup}; expected calls >= 1 and warmup >= 0.")
    if reference is None:
        reference = predict(policy, obs, seed)
    if config is not None:
        apply_cache(policy, config)
    try:
        if config is None and not predict_kwargs:
            actions = reference  # the same call: uncached, same observations and seed
        else:
            actions = predict(policy, obs, seed, **predict_kwargs)
        times = time_calls(lambda: predict(policy, obs, seed, **predict_kwargs), calls, warmup=warmup)
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


def compare_modes(
    policy: nn.Module,
    configs: Mapping[str, BACConfig | None],
    obs: Tensor,
    *,
    calls: int = 20,
    seed: int = 0,
    warmup: int = 2,
) -> list[dict]:
    """One row per entry of ``configs`` (name -> :class:`BACConfig`, in order): :func:`evaluate_mode`'s
    figures plus ``"mode"`` (the name) and ``"speedup"`` (the baseline's median ms over this mode's).

    The first entry is the baseline and must be ``None`` (the uncached policy); its actions are the
    reference of every mode's action error (computed once: same observations, same noise ``seed``).
    """
    names = list(configs)
    if not names or configs[names[0]] is not None:
        first = f"starts with {names[0]!r}: {configs[names[0]]!r}" if names else "is empty"
        raise ValueError(
            f"compare_modes: configs {first}; put the uncached baseline first, e.g. {{'original': None, ...}}"
        )
    if calls < 1 or warmup < 0:
        raise ValueError(f"compare_modes: calls={calls}, warmup={warmup}; expected calls >= 1 and warmup >= 0.")
    with torch.no_grad():
        reference = predict(policy, obs, seed)
    rows: list[dict] = []
    for name, config in configs.items():
        row = evaluate_mode(policy, config, obs, calls=calls, seed=seed, reference=reference, warmup=warmup)
        base = rows[0]["median_ms"] if rows else row["median_ms"]
        rows.append({"mode": name, **row, "speedup": base / row["median_ms"]})
    return rows
