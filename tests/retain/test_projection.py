"""A-GEM projection and PCGrad on per-parameter gradient lists against a flattened float64
reference (a missing gradient is zero on either side): orthogonal to g_ret when they conflict,
untouched when they agree or the gate is off, per-group variant; and the retention loss in
float32."""

import pytest
import torch
from _flat_reference import agem, dot, flat, pcgrad

from policylens.retain import agem_project, grad_dot, pcgrad_combine, retention_loss

SHAPES = ((3, 4), (5,), (2, 2, 2), (6,))


def _lists(seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes], [torch.randn(s, generator=g) for s in shapes]


def _close(got, want, tol=1e-5):
    scale = max(abs(w) for w in want)
    assert max(abs(x - y) for x, y in zip(flat(got, SHAPES), want, strict=True)) <= tol * scale


def test_conflicting_gradient_becomes_orthogonal_and_matches_the_flat_reference():
    a, r = _lists()
    r = [-x - 0.5 * y for x, y in zip(r, a, strict=True)]  # make them conflict
    assert dot(flat(a, SHAPES), flat(r, SHAPES)) < 0
    out, fired, d = agem_project(a, r, delta=0.0)
    assert float(fired) == 1.0 and float(d) == pytest.approx(dot(flat(a, SHAPES), flat(r, SHAPES)), rel=1e-5)
    _close(out, agem(flat(a, SHAPES), flat(r, SHAPES)))
    assert abs(dot(flat(out, SHAPES), flat(r, SHAPES))) < 1e-5 * dot(flat(r, SHAPES), flat(r, SHAPES))
    assert [o.shape for o in out] == [x.shape for x in a]


# (missing from g_act, missing from g_ret): a task-only head, a retention-only probe, both
@pytest.mark.parametrize("missing", [((1,), ()), ((), (1,)), ((1,), (3,)), ((0, 2), (2, 3))])
def test_a_missing_gradient_is_a_zero_gradient(missing):
    a, r = _lists(4)
    r = [-x + 0.5 * y for x, y in zip(a, r, strict=True)]  # conflict
    for i in missing[0]:
        a[i] = None
    for i in missing[1]:
        r[i] = None
    fa, fr = flat(a, SHAPES), flat(r, SHAPES)
    assert dot(fa, fr) < 0
    out, fired, _ = agem_project(a, r, delta=0.0)
    assert float(fired) == 1.0
    _close(out, agem(fa, fr))
    assert abs(dot(flat(out, SHAPES), fr)) < 1e-5 * dot(fr, fr)  # orthogonal to the whole of g_ret
    for i, (x, y) in enumerate(zip(a, r, strict=True)):
        assert (out[i] is None) == (x is None and y is None)


def test_agreeing_gradient_is_untouched():
    a, _ = _lists()
    r = [x * 2 + 0.1 for x in a]
    out, fired, _ = agem_project(a, r)
    assert float(fired) == 0.0 and all(torch.equal(o, x) for o, x in zip(out, a, strict=True))


def test_the_gate_switches_the_projection_off_on_the_device():
    a, r = _lists(5)
    r = [-x for x in a]
    off, fired, _ = agem_project(a, r, delta=0.0, active=torch.tensor(False))
    assert float(fired) == 0.0 and all(torch.equal(o, x) for o, x in zip(off, a, strict=True))
    on, fired, _ = agem_project(a, r, delta=0.0, active=torch.tensor(True))
    assert float(fired) == 1.0
    _close(on, agem(flat(a, SHAPES), flat(r, SHAPES), active=True))


def test_zero_retention_gradient_is_safe_with_delta():
    a, _ = _lists()
    zero = [torch.zeros_like(x) for x in a]
    out, fired, _ = agem_project(a, zero, delta=1e-12)
    assert float(fired) == 0.0 and all(torch.equal(o, x) for o, x in zip(out, a, strict=True))


def test_per_group_projects_each_group_on_its_own():
    a, r = _lists(1)
    r = [-x + 0.3 * y for x, y in zip(a, r, strict=True)]  # conflict in each group
    a[2], r[3] = None, None
    groups = [[0], [1, 2, 3]]
    out, fired, _ = agem_project(a, r, delta=0.0, groups=groups)
    assert float(fired) == 2.0
    for group in groups:
        shapes = [SHAPES[i] for i in group]
        fa, fr = flat([a[i] for i in group], shapes), flat([r[i] for i in group], shapes)
        want, got = agem(fa, fr), flat([out[i] for i in group], shapes)
        assert max(abs(x - y) for x, y in zip(got, want, strict=True)) < 1e-5 * max(map(abs, want))


def test_bfloat16_gradients_keep_their_dtype_and_dot_in_float32():
    a, r = _lists(2)
    a[1] = None
    out, _, _ = agem_project([x if x is None else x.bfloat16() for x in a], [x.bfloat16() for x in r])
    assert all(o.dtype == torch.bfloat16 for o in out)  # out[1]: from g_ret's dtype
    assert grad_dot([x.bfloat16() for x in r], [x.bfloat16() for x in r]).dtype == torch.float32


@pytest.mark.parametrize("missing", [((), ()), ((), (3,)), ((1,), ()), ((0,), (3,))])
def test_pcgrad_matches_its_definition_with_missing_gradients(missing):
    a, r = _lists(3)
    r = [-x + 0.3 * y for x, y in zip(a, r, strict=True)]
    for i in missing[0]:
        a[i] = None
    for i in missing[1]:
        r[i] = None
    fa, fr = flat(a, SHAPES), flat(r, SHAPES)
    assert dot(fa, fr) < 0
    _close(pcgrad_combine(a, r, delta=0.0), pcgrad(fa, fr))


def test_pcgrad_leaves_agreeing_gradients_summed():
    a, _ = _lists(6)
    r = [x * 0.5 + 0.05 for x in a]
    r[1] = None
    _close(pcgrad_combine(a, r, delta=0.0), [x + y for x, y in zip(flat(a, SHAPES), flat(r, SHAPES), strict=True)])


def test_retention_loss_in_float32_and_zero_when_equal():
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    assert retention_loss(x, x.half()).dtype == torch.float32
    assert float(retention_loss(x, x)) == 0.0 and float(retention_loss(x, x, "cosine")) == pytest.approx(0, abs=1e-6)
    torch.testing.assert_close(retention_loss(x.float(), torch.zeros(4, 6)), x.float().pow(2).mean())
    with pytest.raises(ValueError, match="student features"):
        retention_loss(x, torch.zeros(4, 5))
