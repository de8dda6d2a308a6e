"""Measure a caching mode against the uncached policy: wall-clock per action chunk and action error.

:func:`evaluate_mode` measures one mode; :func:`compare_modes` measures several side by side against
one uncached reference, each with its speed-up over the uncached baseline. The policy runs through its
profile's loop method (``predict_action``; ``TinyVLA.sample_actions``). Where the profile names a
prefix (a VLA's PaliGemma pass, once per chunk) its time is measured inside the same calls, so each
row splits into prefix and action expert (per flow step); where it names the module whose calls are the
flow steps (a LeRobot policy), those are timed and the prefix is the rest; where it names the executed part of a
chunk, the action error is given on that part too.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..runs import read_safetensors
from ._config import BACConfig
from ._profiles import default_steps, policy_profile
from ._registry import submodule
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


def predict(policy: nn.Module, obs, seed: int, **kwargs) -> Tensor:
    """One call of the policy's loop method with a fresh generator seeded ``seed``."""
    method = getattr(policy, policy_profile(policy).method)
    return method(obs, generator=torch.Generator().manual_seed(seed), **kwargs)


@contextlib.contextmanager
def _timed_method(policy: nn.Module, name: str | None, sink: list[float]) -> Iterator[None]:
    """While inside, every call of ``policy.<name>`` appends its seconds to ``sink`` (no-op for None)."""
    if name is None or not callable(getattr(policy, name, None)):
        yield
        return
    orig = getattr(policy, name)
    had = name in policy.__dict__

    @functools.wraps(orig)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    object.__setattr__(policy, name, timed)
    try:
        yield
    finally:
        if had:
            object.__setattr__(policy, name, orig)
        else:
            object.__delattr__(policy, name)


@contextlib.contextmanager
def _timed_steps(policy: nn.Module, profile, sink: list[float]) -> Iterator[None]:
    """While inside, the seconds of every flow-step call of the profile's ``step`` module are added to
    ``sink[-1]`` (the caller appends a 0 per chunk); no-op when the profile names none."""
    if profile.step is None:
        yield
        return
    module = submodule(policy, profile.step)
    orig, had = module.forward, "forward" in module.__dict__
    is_step = profile.is_step

    @functools.wraps(orig)
    def timed(*args, **kwargs):
        if is_step is not None and not is_step(args, kwargs):
            return orig(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            sink[-1] += time.perf_counter() - t0

    module.forward = timed
    try:
        yield
    finally:
        if had:
            module.forward = orig
        else:
            del module.forward


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


def _executed_error(policy: nn.Module, reference: Tensor, actions: Tensor) -> dict[str, float]:
    """The action error on the part of each chunk an agent runs (``{}`` when the profile names none)."""
    executed = policy_profile(policy).executed
    if executed is None:
        return {}
    part = executed(policy)
    err = action_error(reference[:, part], actions[:, part])
    return {"mse_executed": err["mse"], "max_abs_executed": err["max_abs"]}


def _split(total: np.ndarray, prefix: list[float], calls: int, steps: int | None) -> dict[str, float]:
    """Median prefix ms, expert ms (the rest of each call) and expert ms per flow step."""
    if len(prefix) < calls:
        return {}
    pre = np.asarray(prefix[-calls:])  # one prefix per call; the warm-up calls came first
    expert = total - pre
    out = {"prefix_ms": float(np.median(pre) * 1e3), "expert_ms": float(np.median(expert) * 1e3)}
    if steps:
        out["steps"] = steps
        out["expert_step_ms"] = out["expert_ms"] / steps
    return out


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
    """Median / p90 ms per ``predict_action(obs)`` (the profile's loop method: ``TinyVLA.sample_actions(batch)``)
    over ``calls`` timed calls after ``warmup`` untimed ones, action error vs uncached, fraction of
    branches skipped (``config`` None: the uncached policy).

    ``reference``: the uncached ``predict_action(obs)`` with this ``seed``, when the caller has it
    already (one uncached call less per mode; two for the uncached mode itself).

    With a profile that names a prefix: ``prefix_ms``, ``expert_ms`` (each call's time less its prefix,
    median), ``steps`` and ``expert_step_ms``. With one that names the executed part of a chunk:
    ``mse_executed`` and ``max_abs_executed`` beside the whole-chunk ``mse`` / ``max_abs``.
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
        profile = policy_profile(policy)
        prefix: list[float] = []
        expert: list[float] = []  # per call: seconds inside the flow steps (a profile with ``step``)

        def call() -> None:
            expert.append(0.0)
            predict(policy, obs, seed, **predict_kwargs)

        with _timed_method(policy, profile.prefix, prefix), _timed_steps(policy, profile, expert):
            times = time_calls(call, calls, warmup=warmup)
        if profile.step is not None:
            prefix = list(times - np.asarray(expert[-calls:]))
        info = cache_info(policy)
        skipped = info.get("skipped_fraction") or 0.0
        steps = predict_kwargs.get(profile.steps_kwarg) or info.get("num_steps") or default_steps(policy, profile)
    finally:
        if config is not None:
            remove_cache(policy)
    return {
        "median_ms": float(np.median(times) * 1e3),
        "p90_ms": float(np.percentile(times, 90) * 1e3),
        "skipped": float(skipped),
        **action_error(reference, actions),
        **_executed_error(policy, reference, actions),
        **(_split(times, prefix, calls, steps) if profile.prefix or profile.step else {}),
    }


def compare_modes(
    policy: nn.Module,
    configs: Mapping[str, BACConfig | None],
    obs,
    *,
    calls: int = 20,
    seed: int = 0,
    warmup: int = 2,
    predict_kwargs: Mapping[str, dict] | None = None,
) -> list[dict]:
    """One row per entry of ``configs`` (name -> :class:`BACConfig`, in order): :func:`evaluate_mode`'s
    figures plus ``"mode"`` (the name) and ``"speedup"`` (the baseline's median ms over this mode's);
    with a prefix split also ``"expert_speedup"`` (the same ratio of ``expert_ms``).

    The first entry is the baseline and must be ``None`` (the uncached policy); its actions are the
    reference of every mode's action error (computed once: same observations, same noise ``seed``).
    ``predict_kwargs``: name -> keyword arguments of that mode's calls (e.g. ``{"steps 5": {"steps":
    5}}`` with ``configs["steps 5"] = None``: fewer flow steps, uncached); never for the baseline.
    """
    names = list(configs)
    extra = dict(predict_kwargs or {})
    unknown = sorted(set(extra) - set(names))
    if unknown or (names and extra.get(names[0])):
        why = f"names {unknown} not in configs {names}" if unknown else f"the baseline {names[0]!r} must run as is"
        raise ValueError(f"compare_modes: predict_kwargs: {why}; give kwargs only for the other modes.")
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
        row = evaluate_mode(
            policy, config, obs, calls=calls, seed=seed, reference=reference, warmup=warmup, **extra.get(name, {})
        )
        base = rows[0] if rows else row
        row = {"mode": name, **row, "speedup": base["median_ms"] / row["median_ms"]}
        if "expert_ms" in row and "expert_ms" in base:
            row["expert_speedup"] = base["expert_ms"] / row["expert_ms"]
        rows.append(row)
    return rows
