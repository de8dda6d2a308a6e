"""``compare_modes``: one row per mode in order, the uncached baseline first; every action error is
against one uncached reference (checked with a float64 loop over the actions), every speed-up
against the baseline's median, and bad input is refused before the policy runs."""

import math

import pytest
import torch

from policylens.accel import BACConfig, cache_context, compare_modes, random_observations
from zoo import tiny_diffusion_policy

SEED = 3


def _actions(policy, obs, config=None):
    generator = torch.Generator().manual_seed(SEED)
    if config is None:
        return policy.predict_action(obs, generator=generator)
    with cache_context(policy, config):
        return policy.predict_action(obs, generator=generator)


def _errors(reference, actions):
    """MSE and max |difference| by an explicit float64 loop (the library subtracts in float32: rel 1e-6)."""
    ref, act = reference.double().flatten().tolist(), actions.double().flatten().tolist()
    total, worst = 0.0, 0.0
    for r, a in zip(ref, act, strict=True):
        total += (a - r) ** 2
        worst = max(worst, abs(a - r))
    return total / len(ref), worst


@pytest.fixture
def counted():
    """A tiny policy (10 denoising steps) whose ``predict_action`` calls are counted, and 3 observations."""
    policy = tiny_diffusion_policy(steps=10)
    obs = random_observations(policy, 3, seed=1)
    calls = []
    inner = policy.predict_action

    def predict_action(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)

    policy.predict_action = predict_action
    return policy, obs, calls


def test_rows_in_order_with_errors_against_the_uncached_actions(counted):
    policy, obs, calls = counted
    configs = {
        "original": None,
        "every2": BACConfig(mode="uniform", every=2),
        "two": BACConfig(mode="uniform", num_updates=2),
    }
    rows = compare_modes(policy, configs, obs, calls=2, seed=SEED, warmup=1)
    assert [r["mode"] for r in rows] == ["original", "every2", "two"]
    # the reference once, then warm-up + timed calls per mode, plus one scored call per cached mode
    assert len(calls) == 1 + 3 + 4 + 4
    reference = _actions(policy, obs)
    for row, config in zip(rows, configs.values(), strict=True):
        mse, worst = _errors(reference, _actions(policy, obs, config))
        assert row["mse"] == pytest.approx(mse, rel=1e-6, abs=1e-12)
        assert row["max_abs"] == pytest.approx(worst, rel=1e-6, abs=1e-12)
        assert row["speedup"] == rows[0]["median_ms"] / row["median_ms"]
        assert 0 < row["median_ms"] <= row["p90_ms"]
    base, every2, two = rows
    assert base["mse"] == base["max_abs"] == base["skipped"] == 0.0 and base["speedup"] == 1.0
    assert every2["mse"] > 0 and two["mse"] > 0  # caching changes the actions of this random policy
    assert every2["skipped"] == pytest.approx(0.5) and two["skipped"] == pytest.approx(0.8)


def test_the_baseline_alone(counted):
    policy, obs, calls = counted
    (row,) = compare_modes(policy, {"none": None}, obs, calls=1, seed=SEED, warmup=0)
    assert row["mode"] == "none" and row["speedup"] == 1.0 and row["mse"] == 0.0 and len(calls) == 2


@pytest.mark.parametrize(
    ("configs", "kwargs", "match"),
    [
        ({}, {}, "configs is empty"),
        ({"uniform": BACConfig(mode="uniform", every=2), "original": None}, {}, "starts with 'uniform'"),
        ({"original": None}, {"calls": 0}, "calls=0"),
        ({"original": None}, {"warmup": -1}, "warmup=-1"),
    ],
)
def test_bad_input_is_refused_before_the_policy_runs(counted, configs, kwargs, match):
    policy, obs, calls = counted
    with pytest.raises(ValueError, match=match) as info:
        compare_modes(policy, configs, obs, seed=SEED, **kwargs)
    assert str(info.value).startswith("compare_modes: ") and calls == []
    if "configs" in match or "starts" in match:
        assert "put the uncached baseline first" in str(info.value)


def test_speedups_are_ratios_of_the_medians():
    """The baseline's median over each mode's, whatever the timings were (no timing is asserted)."""
    policy = tiny_diffusion_policy(steps=4)
    rows = compare_modes(policy, {"a": None, "b": BACConfig(mode="uniform", every=4)}, torch.zeros(1, 2, 4), calls=1)
    assert math.isclose(rows[1]["speedup"] * rows[1]["median_ms"], rows[0]["median_ms"], rel_tol=1e-12)
