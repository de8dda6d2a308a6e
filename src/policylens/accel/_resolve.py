"""Turn a :class:`BACConfig` into (step count, per-branch update steps), checking it fits the model."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ._calibration import Calibration
from ._config import BACConfig
from ._hash import calibration_hash
from ._profiles import default_steps, policy_profile
from ._registry import Branch
from ._schedule import uniform_update_steps


def resolve_schedule(policy: nn.Module, branches: list[Branch], config: BACConfig) -> tuple[int, dict[str, list[int]]]:
    names = [b.name for b in branches]
    profile = policy_profile(policy)
    policy_steps = default_steps(policy, profile)
    if config.mode in ("original", "uniform"):
        K = config.num_steps or policy_steps
        if K is None:
            raise ValueError(
                f"BACConfig(mode={config.mode!r}).num_steps is None and {type(policy).__name__} has no "
                f"int {profile.steps}; pass num_steps=<denoising steps per prediction>."
            )
        if config.mode == "original":
            return K, {n: list(range(K)) for n in names}
        steps = uniform_update_steps(K, every=config.every, num_updates=config.num_updates)
        return K, {n: list(steps) for n in names}
    cal = config.calibration
    if isinstance(cal, str | Path):
        cal = Calibration.load(cal)
    if not isinstance(cal, Calibration):
        raise TypeError(f"BACConfig.calibration is {type(cal).__name__}; expected a Calibration or a JSON path.")
    K = cal.num_steps
    # a schedule for another sampler's step count (e.g. DDIM-50 on a DDPM-100 policy) is run by passing
    # num_steps; only without it does the policy's own default have to match
    given = ("BACConfig.num_steps", config.num_steps) if config.num_steps is not None else None
    for label, steps in (given or (f"policy.{profile.steps}", policy_steps),):
        if steps is not None and steps != K:
            raise ValueError(
                f"{label}={steps}, but the calibration was made for {K} denoising steps; re-calibrate "
                f"for {steps} steps, or run the policy with {profile.steps_kwarg}={K} and pass "
                f"BACConfig(num_steps={K})."
            )
    if sorted(names) != sorted(cal.block_names):
        missing = sorted(set(cal.block_names) - set(names))
        extra = sorted(set(names) - set(cal.block_names))
        raise ValueError(
            f"calibration blocks do not match the model: missing in model {missing[:5]}, not calibrated "
            f"{extra[:5]}; calibrate this model (`policylens accel calibrate`)."
        )
    h = calibration_hash(policy, cal.model_hash)  # a calibration written before sha256: its 16 hex digits
    if h != cal.model_hash:
        raise ValueError(
            f"calibration model_hash={cal.model_hash!r} but this model hashes to {h!r}: the schedule was made "
            "for other weights; re-calibrate on this checkpoint."
        )
    if config.num_updates is None and config.n_bu is None and config.metric is None:
        return K, {n: list(cal.schedule[n]) for n in names}
    sched = cal.make_schedule(
        config.num_updates or cal.num_updates,
        cal.n_bu if config.n_bu is None else config.n_bu,
        config.metric,
    )
    return K, sched
