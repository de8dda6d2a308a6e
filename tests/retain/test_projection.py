"""A-GEM projection and PCGrad on per-parameter gradient lists: orthogonal to g_ret when they
conflict, untouched when they agree, equal to a flattened reference, per-group variant; and
the retention loss in float32."""

import pytest
import torch

from policylens.retain import agem_project, grad_dot, pcgrad_combine, retention_loss


def _lists(seed=0, shapes=((3, 4), (5,), (2, 2, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes], [torch.randn(s, generator=g) for s in shapes]


def _flat(xs):
    return torch.cat([x.flatten() for x in xs])


def _reference(a, r, delta):
    fa, fr = _flat(a).double(), _flat(r).double()
    dot = fa @ fr
    return fa - dot / (fr @ fr + delta) * fr if dot < 0 else fa


def test_conflicting_gradient_becomes_orthogonal_and_matches_the_flat_reference():
    a, r = _lists()
    r = [-x - 0.5 * y for x, y in zip(r, a, strict=True)]  # make them conflict
    assert grad_dot(a, r) < 0
    out, fired, dot = agem_project(a, r, delta=0.0)
    assert float(fired) == 1.0 and float(dot) < 0
    assert abs(float(grad_dot(out, r))) < 1e-5 * float(grad_dot(r, r))
    torch.testing.assert_close(_flat(out).double(), _reference(a, r, 0.0), rtol=1e-5, atol=1e-6)
    assert [o.shape for o in out] == [x.shape for x in a]


def test_agreeing_gradient_is_untouched():
    a, _ = _lists()
    r = [x * 2 + 0.1 for x in a]
    out, fired, _ = agem_project(a, r)
    assert float(fired) == 0.0 and all(torch.equal(o, x) for o, x in zip(out, a, strict=True))


def test_zero_retention_gradient_is_safe_with_delta():
    a, _ = _lists()
    zero = [torch.zeros_like(x) for x in a]
    out, fired, _ = agem_project(a, zero, delta=1e-12)
    assert float(fired) == 0.0 and all(torch.equal(o, x) for o, x in zip(out, a, strict=True))


def test_per_group_projects_each_group_on_its_own():
    a, r = _lists(1)
    r = [-x for x in a]  # conflict everywhere
    out, fired, _ = agem_project(a, r, delta=0.0, groups=[[0], [1, 2]])
    assert float(fired) == 2.0
    for group in ([0], [1, 2]):
        assert abs(float(grad_dot([out[i] for i in group], [r[i] for i in group]))) < 1e-5


def test_missing_gradients_and_bfloat16_dots_in_float32():
    a, r = _lists(2)
    a[1] = None
    out, _, _ = agem_project([x if x is None else x.bfloat16() for x in a], [x.bfloat16() for x in r])
    assert out[1] is None and out[0].dtype == torch.bfloat16
    assert grad_dot([x.bfloat16() for x in r], [x.bfloat16() for x in r]).dtype == torch.float32


def test_pcgrad_matches_its_definition():
    a, r = _lists(3)
    r = [-x + 0.3 * y for x, y in zip(a, r, strict=True)]
    out = pcgrad_combine(a, r, delta=0.0)
    fa, fr = _flat(a).double(), _flat(r).double()
    pa = fa - (fa @ fr) / (fr @ fr) * fr
    pr = fr - (fr @ fa) / (fa @ fa) * fa
    torch.testing.assert_close(_flat(out).double(), pa + pr, rtol=1e-5, atol=1e-6)


def test_retention_loss_in_float32_and_zero_when_equal():
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    assert retention_loss(x, x.half()).dtype == torch.float32
    assert float(retention_loss(x, x)) == 0.0 and float(retention_loss(x, x, "cosine")) == pytest.approx(0, abs=1e-6)
    torch.testing.assert_close(retention_loss(x.float(), torch.zeros(4, 6)), x.float().pow(2).mean())
    with pytest.raises(ValueError, match="student features"):
        retention_loss(x, torch.zeros(4, 5))
