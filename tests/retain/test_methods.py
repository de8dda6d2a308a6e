"""Retention methods as classes: the table keeps today's names and order, each class's flags say
what the Retainer does (retention pass, λ updates), and every ``combine`` matches a float64 rule
written out with explicit loops (missing gradients as zeros, per-group projection included)."""

import math

import pytest
import torch
from _toy import batches, student, task_loss, toy_model

from policylens.retain import (
    AGEM,
    METHOD_TYPES,
    METHODS,
    CRaFT,
    Fixed,
    PCGrad,
    Plain,
    Retainer,
    RetentionConfig,
    RetentionMethod,
    make_method,
)

SHAPES = [(3,), (2, 2), (4,), (1,)]


def _grads(seed: int, missing: int | None) -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(s, generator=g) for s in SHAPES]
    if missing is not None:
        out[missing] = None
    return out


def _flat(grads, indices=None) -> list[float]:
    """float64 values of the parameters ``indices`` (default all), zeros for a missing gradient."""
    out = []
    for i in indices if indices is not None else range(len(SHAPES)):
        n = math.prod(SHAPES[i])
        out += [0.0] * n if grads[i] is None else [float(v) for v in grads[i].double().flatten()]
    return out


def _dot(u, v) -> float:
    total = 0.0
    for x, y in zip(u, v, strict=True):
        total += x * y
    return total


def _project(g, r, delta, gate=True):
    """g − ⟨g, r⟩/(‖r‖² + δ)·r where ⟨g, r⟩ < 0 and ``gate``; (result, whether it projected)."""
    d = _dot(g, r)
    if not gate or d >= 0:
        return list(g), False
    c = d / (_dot(r, r) + delta)
    return [x - c * y for x, y in zip(g, r, strict=True)], True


def _reference(name, projection, act, ret, lam, l_ret, epsilon, delta, groups):
    """(flat combined gradient, number of projected groups) in float64."""
    a, r = _flat(act), _flat(ret)
    if name == "plain":
        return a, 0
    if name == "fixed":
        return [x + lam * y for x, y in zip(a, r, strict=True)], 0
    if name == "pcgrad":
        lr = [lam * y for y in r]
        pa, _ = _project(a, lr, delta)
        pb, _ = _project(lr, a, delta)
        return [x + y for x, y in zip(pa, pb, strict=True)], 0
    base = a if projection == "conflict" else [x + lam * y for x, y in zip(a, r, strict=True)]
    gate = projection == "conflict" or l_ret > epsilon
    out = [0.0] * len(a)
    fired = 0
    offsets = [0]
    for s in SHAPES:
        offsets.append(offsets[-1] + math.prod(s))
    for group in groups or [list(range(len(SHAPES)))]:
        pos = [k for i in group for k in range(offsets[i], offsets[i + 1])]
        projected, did = _project([base[k] for k in pos], [r[k] for k in pos], delta, gate)
        fired += did
        for k, v in zip(pos, projected, strict=True):
            out[k] = v
    if projection == "conflict":
        out = [x + lam * y for x, y in zip(out, r, strict=True)]
    return out, fired


def test_the_table_keeps_the_names_in_order_and_the_flags():
    assert METHODS == ("plain", "fixed", "pcgrad", "agem", "craft") == tuple(METHOD_TYPES)
    assert [METHOD_TYPES[n] for n in METHODS] == [Plain, Fixed, PCGrad, AGEM, CRaFT]
    assert [METHOD_TYPES[n].needs_retention for n in METHODS] == [False, True, True, True, True]
    assert [METHOD_TYPES[n].dual for n in METHODS] == [False, False, False, False, True]
    assert all(issubclass(t, RetentionMethod) for t in METHOD_TYPES.values())


def test_make_method_takes_the_settings_from_the_config():
    m = make_method(RetentionConfig(method="craft", projection="active", epsilon=0.2, delta=1e-6))
    assert type(m) is CRaFT and (m.projection, m.epsilon, m.delta) == ("active", 0.2, 1e-6)
    assert type(make_method(RetentionConfig(method="pcgrad", delta=1e-3))) is PCGrad
    assert make_method(RetentionConfig(method="pcgrad", delta=1e-3)).delta == 1e-3
    assert repr(make_method(RetentionConfig(method="agem"))) == "AGEM(projection='conflict', epsilon=0.05, delta=1e-12)"
    with pytest.raises(ValueError, match=r"AGEM: projection='orthogonal' is unknown; use one of \['conflict', 'act"):
        AGEM("orthogonal")


CASES = [  # name, projection, λ, L_ret, ε, groups
    ("plain", "conflict", 0.0, 1.0, 0.0, None),
    ("fixed", "conflict", 0.7, 1.0, 0.0, None),
    ("pcgrad", "conflict", 1.3, 1.0, 0.0, None),
    ("agem", "conflict", 0.4, 1.0, 0.0, None),
    ("agem", "conflict", 0.4, 1.0, 0.0, [[0, 1], [2, 3]]),
    ("craft", "conflict", 2.0, 1.0, 0.0, [[0], [1, 3], [2]]),
    ("agem", "active", 0.1, 1.0, 0.5, None),  # over budget
    ("craft", "active", 0.1, 0.4, 0.5, None),  # within budget: not projected
    ("craft", "active", 0.1, 1.0, 0.5, [[0, 2], [1, 3]]),
]


@pytest.mark.parametrize(("name", "projection", "lam", "l_ret", "epsilon", "groups"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_combine_matches_the_float64_rule(name, projection, lam, l_ret, epsilon, groups, seed):
    act, noise = _grads(seed, missing=3), _grads(seed + 100, missing=1)  # one side each has a hole
    ret = [None if n is None else 0.5 * n - (0 if a is None else a) for a, n in zip(act, noise, strict=True)]
    delta = 1e-12
    method = make_method(RetentionConfig(method=name, projection=projection, epsilon=epsilon, delta=delta))
    losses = torch.tensor([2.0, l_ret])
    combined, stats = method.combine(act, ret, torch.tensor(lam), losses, groups)
    want, fired = _reference(name, projection, act, ret, lam, l_ret, epsilon, delta, groups)
    got = _flat(combined)
    scale = max(abs(w) for w in want)
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 1e-5 * scale
    assert float(stats["projected"]) == fired
    holes = [i for i in range(len(SHAPES)) if act[i] is None and (ret[i] is None or name == "plain")]
    assert [i for i, g in enumerate(combined) if g is None] == holes


def test_the_retainer_runs_what_the_class_says():
    """plain: no retention pass, λ's counter untouched; the others count each step towards λ,
    and only craft moves it."""
    for name in METHODS:
        model = toy_model()
        calls = []
        feats = student(model)

        def counting(batch, indices=None, feats=feats, calls=calls):
            calls.append(1)
            return feats(batch, indices=indices)

        retainer = Retainer(model, task_loss, counting, RetentionConfig(method=name, lam=0.5, epsilon=0.0))
        task, anchor = batches()
        retainer.backward(task, None if name == "plain" else anchor)
        kind = METHOD_TYPES[name]
        assert type(retainer.method) is kind
        assert len(calls) == int(kind.needs_retention)
        assert retainer.dual.calls == int(kind.needs_retention) and retainer.dual.fixed == (not kind.dual)
        assert (retainer.dual.lam != 0.5) == kind.dual
