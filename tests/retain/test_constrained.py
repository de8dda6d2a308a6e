"""Which projection rule solves "minimise L_act subject to L_ret ≤ ε": a 2-D problem with a known
optimum, L_act = ½‖θ − a‖², L_ret = ½‖θ − b‖² (the MSE of features θ against the anchor b),
ε small enough that the constraint binds. The KKT point (derived here in float64):
θ* = b + √(2ε)·(a − b)/‖a − b‖, λ* = ‖a − b‖/√(2ε) − 1, L_act* = ½(‖a − b‖ − √(2ε))².

The Retainer runs plain SGD (a constant step: 0.05 with η_λ = 1, or 0.02 with η_λ = 2) from θ0
inside the budget. ``active`` and the unprojected primal-dual loop reach (θ*, λ*); ``conflict``
(CRaFT's rule) stops inside the constraint with λ = 0 and a worse L_act, at a point that depends
on the learning rate. Float64 loops of each rule, written out here, are the reference."""

import math

import pytest
import torch
from torch import nn

from policylens.retain import Retainer, RetentionConfig

A, B, EPS = (3.0, 1.0), (0.0, 0.0), 0.1
THETA0 = (0.0, 0.3)  # L_ret = 0.045 < ε
LR, ETA, STEPS = 0.05, 1.0, 1000

DIST = math.dist(A, B)
RADIUS = math.sqrt(2 * EPS)
THETA_STAR = tuple(b + RADIUS * (a - b) / DIST for a, b in zip(A, B, strict=True))
LAM_STAR = DIST / RADIUS - 1  # 6.0711
L_ACT_STAR = 0.5 * (DIST - RADIUS) ** 2  # 3.6858


def _l_act(theta):
    return 0.5 * sum((t - a) ** 2 for t, a in zip(theta, A, strict=True))


def _l_ret(theta):
    return 0.5 * sum((t - b) ** 2 for t, b in zip(theta, B, strict=True))


def _reference_loop(rule: str, lr: float = LR, eta: float = ETA, steps: int = STEPS) -> tuple[list[float], float]:
    """SGD on θ and dual ascent on λ in Python floats, one rule written out per branch."""
    theta, lam = list(THETA0), 0.0
    for _ in range(steps):
        g_act = [t - a for t, a in zip(theta, A, strict=True)]
        g_ret = [t - b for t, b in zip(theta, B, strict=True)]
        l_ret, rr = _l_ret(theta), sum(r * r for r in g_ret)
        if rule in ("conflict", "g_act while active"):  # g_act off g_ret where they conflict, + λ g_ret
            c = sum(x * r for x, r in zip(g_act, g_ret, strict=True))
            on = c < 0 and (rule == "conflict" or l_ret > EPS or lam > 0)
            g = [x - (c / rr if on else 0.0) * r for x, r in zip(g_act, g_ret, strict=True)]
            step = [x + lam * r for x, r in zip(g, g_ret, strict=True)]
        else:  # "primal-dual": g_act + λ g_ret; "active": that step off g_ret while L_ret > ε
            step = [x + lam * r for x, r in zip(g_act, g_ret, strict=True)]
            c = sum(x * r for x, r in zip(step, g_ret, strict=True))
            on = c < 0 and (l_ret > EPS or (rule == "active, or λ > 0" and lam > 0))
            if rule != "primal-dual" and on:
                step = [x - c / rr * r for x, r in zip(step, g_ret, strict=True)]
        theta = [t - lr * x for t, x in zip(theta, step, strict=True)]
        lam = max(0.0, lam + eta * (l_ret - EPS))
    return theta, lam


class _Theta(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(THETA0))


def _retainer_run(projection: str, lr: float = LR, eta: float = ETA) -> tuple[list[float], float, list[float]]:
    """θ and λ after ``steps``, and θ 300 steps before the end."""
    model, a = _Theta(), torch.tensor(A)
    anchor = {"target_features": torch.tensor([B])}  # (1, 2): the MSE is ½‖θ − b‖²

    def task_loss(m, batch):
        return 0.5 * ((m.theta - a) ** 2).sum()

    def student(inputs, indices=None):
        return {"target_features": model.theta[None]}

    config = RetentionConfig(epsilon=EPS, lam_lr=eta, method="craft", projection=projection)
    retainer = Retainer(model, task_loss, student, config)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for k in range(STEPS):
        retainer.backward({}, anchor)
        opt.step()
        if k == STEPS - 301:
            earlier = model.theta.detach().double().tolist()
    return model.theta.detach().double().tolist(), retainer.dual.lam, earlier


def _theta_error(theta):
    return math.dist(theta, THETA_STAR) / math.hypot(*THETA_STAR)


def test_the_analytic_optimum_is_a_kkt_point():
    assert _l_ret(THETA_STAR) == pytest.approx(EPS, rel=1e-12)  # on the boundary
    grad = [(t - a) + LAM_STAR * (t - b) for t, a, b in zip(THETA_STAR, A, B, strict=True)]
    assert max(map(abs, grad)) < 1e-12 and LAM_STAR > 0
    assert _l_act(THETA_STAR) == pytest.approx(L_ACT_STAR, rel=1e-12)


@pytest.mark.parametrize(("lr", "eta"), [(LR, ETA), (0.02, 2.0)])
@pytest.mark.parametrize("rule", ["primal-dual", "active"])
def test_float64_loops_reach_the_optimum(rule, lr, eta):
    theta, lam = _reference_loop(rule, lr, eta)
    assert _theta_error(theta) < 1e-7 and abs(lam - LAM_STAR) / LAM_STAR < 1e-7


@pytest.mark.parametrize(("lr", "eta"), [(LR, ETA), (0.02, 2.0)])
def test_active_projection_reaches_theta_star_and_lambda_star(lr, eta):
    theta, lam, _ = _retainer_run("active", lr, eta)
    assert _theta_error(theta) < 1e-5  # measured < 1e-6 (float32)
    assert abs(lam - LAM_STAR) / LAM_STAR < 1e-5
    assert _l_act(theta) == pytest.approx(L_ACT_STAR, rel=1e-5)


def test_conflict_projection_stops_inside_the_constraint():
    theta, lam, earlier = _retainer_run("conflict")
    ref, ref_lam = _reference_loop("conflict")
    assert math.dist(theta, ref) < 1e-4 and ref_lam == lam == 0.0  # the Retainer follows the rule
    assert _l_ret(theta) < 0.7 * EPS  # measured 0.066: budget left unused
    assert _l_act(theta) > L_ACT_STAR + 0.2  # measured 3.915 against 3.686
    assert math.dist(theta, earlier) < 1e-5  # a fixed point, not slow progress
    other, _, _ = _retainer_run("conflict", lr=0.02)
    assert _l_act(other) > _l_act(theta) + 0.05  # measured 4.030: the end point depends on the step


def test_the_other_readings_of_active_do_not_converge():
    """Why ``active`` projects the whole step and gates on L_ret alone. Projecting g_act and then
    adding λ g_ret has no fixed point at θ* (g_act = −λ* g_ret there, so λ* g_ret is left): the
    loop cycles round the boundary, λ falling back towards 0 again and again. Gating on
    "L_ret > ε or λ > 0" can freeze θ inside the budget while λ > 0 decays (at step 0.02, η_λ = 2)."""
    theta, _ = _reference_loop("g_act while active")
    lams = [_reference_loop("g_act while active", steps=STEPS + k)[1] for k in range(0, 60, 3)]
    assert _theta_error(theta) > 1e-3 and min(lams) < 0.5 * LAM_STAR
    theta, lam = _reference_loop("active, or λ > 0", lr=0.02, eta=2.0)
    assert _l_ret(theta) < EPS and abs(lam - LAM_STAR) / LAM_STAR > 0.05  # measured 7% off after 1000 steps
