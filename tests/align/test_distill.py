"""Stage-3 objectives against their formulas written out with loops: the multi-target distiller
(cosine + smooth-L1 through per-target adaptors) and the Spatial Forcing cosine alignment."""

import math

import pytest
import torch

from policylens.align._distill import Distiller, SpatialForcing


def _cos_dist(a, b):
    """1 − cos for two lists."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1 - dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _smooth_l1(x, beta):
    return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta


def _rows(x):
    return x.reshape(-1, x.shape[-1]).tolist()


def test_distiller_matches_the_loop_formula_per_target():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 6, generator=g)
    targets = {"aligned": torch.randn(2, 3, 4, generator=g) * 2, "points": torch.randn(2, 3, 5, generator=g)}
    dist = Distiller(6, {"aligned": 4, "points": 5}, weights={"points": 0.25}, l1_weight=0.5, l1_beta=0.3)
    total, parts = dist(student, targets)
    want_total = 0.0
    for name, t in targets.items():
        adaptor = dist.adaptors[name]
        preds = [(adaptor.weight @ s + adaptor.bias).tolist() for s in student.reshape(-1, 6)]
        rows = _rows(t)
        cos = sum(_cos_dist(p, r) for p, r in zip(preds, rows, strict=True)) / len(rows)
        l1 = sum(
            _smooth_l1(p - r, 0.3) for pr, rr in zip(preds, rows, strict=True) for p, r in zip(pr, rr, strict=True)
        )
        want = cos + 0.5 * l1 / (len(rows) * t.shape[-1])
        assert parts[name].item() == pytest.approx(want, rel=1e-5)
        want_total += (0.25 if name == "points" else 1.0) * want
    assert total.item() == pytest.approx(want_total, rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in dist.parameters())


def test_distiller_is_zero_when_the_adaptor_reproduces_the_target():
    dist = Distiller(4, {"aligned": 4})
    with torch.no_grad():
        dist.adaptors["aligned"].weight.copy_(torch.eye(4))
        dist.adaptors["aligned"].bias.zero_()
    x = torch.randn(3, 4)
    total, _ = dist(x, {"aligned": x.clone()})
    assert total.item() == pytest.approx(0.0, abs=1e-6)


def test_distiller_checks_names_and_shapes():
    with pytest.raises(ValueError, match="weights for"):
        Distiller(4, {"a": 3}, weights={"b": 1.0})
    dist = Distiller(4, {"a": 3})
    with pytest.raises(ValueError, match="subset of"):
        dist(torch.zeros(2, 4), {"b": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"Distiller\['a'\]"):
        dist(torch.zeros(2, 4), {"a": torch.zeros(2, 5)})


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_spatial_forcing_is_one_minus_mean_cosine_after_norm_and_mlp(norm):
    g = torch.Generator().manual_seed(1)
    tokens, teacher, pos = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 3, generator=g), torch.randn(4, 3)
    sf = SpatialForcing(6, 3, hidden=8, norm=norm)
    loss = sf(tokens, teacher, pos)
    flat = tokens.reshape(-1, 6)
    if norm == "batch":  # training-mode BatchNorm: statistics over all B·N tokens
        normed = (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + sf.norm.eps)
    elif norm == "layer":
        normed = (flat - flat.mean(1, keepdim=True)) / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + 1e-5)
    else:
        normed = flat
    lin1, lin2 = sf.mlp[0], sf.mlp[2]
    total = 0.0
    for i, x in enumerate(normed):
        hidden = torch.nn.functional.gelu(lin1.weight @ x + lin1.bias)
        pred = (lin2.weight @ hidden + lin2.bias).tolist()
        total += _cos_dist(pred, (teacher.reshape(-1, 3)[i] + pos[i % 4]).tolist())
    assert loss.item() == pytest.approx(total / 8, rel=1e-4)
    loss.backward()
    assert sf.mlp[0].weight.grad.abs().sum() > 0


def test_spatial_forcing_checks_shapes():
    with pytest.raises(ValueError, match="norm='group'"):
        SpatialForcing(6, 3, norm="group")
    sf = SpatialForcing(6, 3)
    with pytest.raises(ValueError, match="same leading"):
        sf(torch.zeros(2, 4, 6), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="pos"):
        sf(torch.randn(2, 4, 6), torch.zeros(2, 4, 3), torch.zeros(5, 3))


def test_bf16_autocast_gives_finite_float32_losses():
    student, teacher = torch.randn(2, 4, 6), torch.randn(2, 4, 3)
    dist, sf = Distiller(6, {"a": 3}), SpatialForcing(6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = dist(student, {"a": teacher})
        align = sf(student, teacher)
    for loss in (total, align):
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
