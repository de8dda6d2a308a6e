"""Dual ascent on λ: a toy constrained problem with a known optimum, every-N updates, skipped
non-finite steps, and a JSON round trip of its state."""

import json
import math

import pytest
import torch

from policylens.retain import DualAscent


def test_converges_on_a_constrained_quadratic():
    """min ‖x − a‖² s.t. ‖x − b‖² ≤ ε: the optimum is b + √ε (a − b)/‖a − b‖ when a is outside."""
    a, b, eps = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.0]), 1.0
    dual = DualAscent(epsilon=eps, lr=0.5)
    x = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.05)
    for _ in range(4000):
        lam = dual.value()
        loss = (x - a).pow(2).sum() + lam * (x - b).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        dual.update((x.detach() - b).pow(2).sum())
    optimum = b + math.sqrt(eps) * (a - b) / (a - b).norm()
    assert (x.detach() - optimum).norm() / optimum.norm() < 0.01
    assert abs(dual.lam - 2.0) / 2.0 < 0.01  # the KKT multiplier: (‖a − b‖ − √ε)/√ε = 2


def test_every_n_steps_and_non_finite_steps_are_skipped():
    dual = DualAscent(epsilon=1.0, lr=1.0, every=2)
    dual.update(torch.tensor(3.0))
    assert dual.lam == 0.0  # not yet: every 2 steps
    dual.update(torch.tensor(float("nan")))
    assert dual.lam == 2.0 and dual.skipped == 1  # the mean of the finite steps: 3 − 1
    dual.update(torch.tensor(5.0), finite=torch.tensor(False))
    dual.update(torch.tensor(0.0))
    assert dual.lam == 1.0 and dual.skipped == 2 and dual.history == [2.0, 1.0]


def test_never_below_zero_and_fixed_weight():
    dual = DualAscent(epsilon=1.0, lr=10.0, lam=0.5)
    dual.update(torch.tensor(0.0))
    assert dual.lam == 0.0
    fixed = DualAscent(epsilon=0.0, lr=10.0, lam=0.3, fixed=True)
    fixed.update(torch.tensor(5.0))
    assert fixed.lam == pytest.approx(0.3)


def test_state_round_trips_through_json():
    dual = DualAscent(epsilon=0.1, lr=0.5, every=3)
    for v in (1.0, 2.0, 3.0, 4.0):
        dual.update(torch.tensor(v))
    restored = DualAscent(epsilon=0.0)
    restored.load_state_dict(json.loads(json.dumps(dual.state_dict())))
    for d in (dual, restored):
        d.update(torch.tensor(1.0))
        d.update(torch.tensor(1.0))
    assert restored.lam == dual.lam and restored.history == dual.history and restored.calls == 6
