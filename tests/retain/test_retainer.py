"""The drop-in retention step: two separate backward passes, the combined gradient in .grad
against a flattened float64 reference for every method and projection (parameters that only one
loss reaches included), accumulation, AMP, config checks and the state for resuming."""

import copy

import pytest
import torch
from _flat_reference import dot, flat, unflatten, update
from _toy import SplitToy, batches, split_student, student, task_loss, toy_model

from policylens.retain import PROJECTIONS, Retainer, RetentionConfig


def _reference(model, task, anchor, lam, method="craft", projection="conflict", epsilon=0.0, make_student=student):
    """The combined gradient from float64 autograd on a copy and the flat reference rules, per
    parameter, and (flat g_act, flat g_ret, L_ret)."""
    twin = copy.deepcopy(model).double()
    params = list(twin.parameters())
    shapes = [p.shape for p in params]
    g_act = torch.autograd.grad(task_loss(twin, {k: v.double() for k, v in task.items()}), params, allow_unused=True)
    feats = make_student(twin)({"x": anchor["x"].double()})["target_features"]
    l_ret = ((feats - anchor["target_features"].double()) ** 2).mean()
    g_ret = torch.autograd.grad(l_ret, params, allow_unused=True)
    fa, fr = flat(g_act, shapes), flat(g_ret, shapes)
    want = update(method, projection, fa, fr, lam, float(l_ret.detach()), epsilon)
    return unflatten(want, shapes), fa, fr


def _assert_grads(model, want, rtol=1e-5):
    scale = max(float(w.abs().max()) for w in want)
    for p, w in zip(model.parameters(), want, strict=True):  # no .grad: a zero gradient
        got = torch.zeros_like(w) if p.grad is None else p.grad.double()
        assert float((got - w).abs().max()) <= rtol * scale


def test_combined_gradient_comes_from_two_separate_passes():
    model = toy_model()
    task, anchor = batches()
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(method="craft", lam=0.7, epsilon=0.0))
    stats = retainer.backward(task, anchor)
    want, _, _ = _reference(model, task, anchor, 0.7)
    _assert_grads(model, want)
    assert float(stats["projected"]) == 1.0 and float(stats["cos_act_ret"]) < 0  # they did conflict
    # one combined backward would have given g_act + λ g_ret, unprojected: a different gradient
    naive, _, _ = _reference(model, task, anchor, 0.7, method="fixed")
    assert max(float((p.grad - n).abs().max()) for p, n in zip(model.parameters(), naive, strict=True)) > 1e-3


# SplitToy(1): trunk (both losses), head (task only), probe (retention only); ⟨g_act, g_ret⟩ < 0 and
# ⟨g_act + λ g_ret, g_ret⟩ < 0 exactly for λ < 0.876 (measured on the reference)
CASES = [  # method, projection, λ, ε, does the projection fire
    ("plain", "conflict", 0.0, 0.0, False),
    ("fixed", "conflict", 0.7, 0.0, False),
    ("pcgrad", "conflict", 1.0, 0.0, False),
    ("agem", "conflict", 0.0, 0.0, True),
    ("craft", "conflict", 2.0, 0.0, True),  # conflict: g_act is projected whatever λ is
    ("agem", "active", 0.0, 0.0, True),
    ("craft", "active", 0.3, 0.0, True),  # over budget, λ below what the step needs: projected
    ("craft", "active", 2.0, 0.0, False),  # over budget, λ already enough: the primal-dual step
    ("craft", "active", 0.3, 10.0, False),  # within budget: the task may use it
]


@pytest.mark.parametrize(("method", "projection", "lam", "epsilon", "fires"), CASES)
def test_every_rule_matches_the_flat_reference_with_one_sided_parameters(method, projection, lam, epsilon, fires):
    model = SplitToy(seed=1)
    task, anchor = batches(8, seed=1)
    config = RetentionConfig(method=method, projection=projection, lam=lam, epsilon=epsilon)
    stats = Retainer(model, task_loss, split_student(model), config).backward(task, anchor)
    want, fa, fr = _reference(model, task, anchor, lam, method, projection, epsilon, split_student)
    assert dot(fa, fr) < 0 and -dot(fa, fr) / dot(fr, fr) == pytest.approx(0.876, abs=1e-3)
    _assert_grads(model, want)
    assert float(stats["projected"]) == float(fires)
    got = flat([p.grad for p in model.parameters()], [p.shape for p in model.parameters()])
    if fires:  # the step no longer raises L_ret to first order, the probe (no g_act) included
        assert abs(dot(got, fr) - lam * dot(fr, fr) * (projection == "conflict")) < 1e-5 * dot(fr, fr)


@pytest.mark.parametrize("epsilon", [0.485, 0.5])
def test_active_gate_reads_the_mean_retention_loss_of_the_accumulated_step(epsilon):
    """Micro-batch L_ret 0.473 then 0.509, mean 0.491: over ε = 0.485, under ε = 0.5 (where the
    last micro-batch alone would be over)."""
    task, anchor = batches(8)
    config = RetentionConfig(method="craft", projection="active", epsilon=epsilon)
    whole = toy_model()
    want = Retainer(whole, task_loss, student(whole), config).backward(task, anchor)
    micro = toy_model()
    retainer = Retainer(micro, task_loss, student(micro), RetentionConfig(**{**vars(config), "accumulation": 2}))
    for k in range(2):
        part = slice(4 * k, 4 * k + 4)
        got = retainer.backward({n: v[part] for n, v in task.items()}, {n: v[part] for n, v in anchor.items()}, k == 1)
    assert float(got["loss_ret"]) == pytest.approx(0.491, abs=1e-3)
    assert float(got["projected"]) == float(want["projected"]) == float(epsilon < 0.491)
    for a, b in zip(whole.parameters(), micro.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_config_names_the_field_and_the_choices():
    assert PROJECTIONS == ("conflict", "active") and RetentionConfig().projection == "conflict"
    with pytest.raises(ValueError, match=r"RetentionConfig.projection='orthogonal' .*\['conflict', 'active'\]"):
        RetentionConfig(projection="orthogonal")
    with pytest.raises(ValueError, match=r"RetentionConfig.method='crafty' .*'craft'\]"):
        RetentionConfig(method="crafty")
    for field, value in (("epsilon", -0.1), ("lam_lr", float("nan")), ("dual_every", 0), ("accumulation", 0)):
        with pytest.raises(ValueError, match=f"RetentionConfig.{field}="):
            RetentionConfig(**{field: value})
    with pytest.raises(ValueError, match="per_group=True needs groups="):
        Retainer(toy_model(), task_loss, student(toy_model()), RetentionConfig(per_group=True))
    with pytest.raises(ValueError, match="needs anchor_batch="):
        Retainer(toy_model(), task_loss, student(toy_model()), RetentionConfig()).backward(batches()[0])


@pytest.mark.parametrize("method", ["plain", "fixed", "pcgrad", "agem", "craft"])
def test_accumulating_four_micro_steps_equals_one_step_on_the_whole_batch(method):
    task, anchor = batches(8)
    whole = toy_model()
    Retainer(whole, task_loss, student(whole), RetentionConfig(method=method, lam=0.5)).backward(task, anchor)
    micro = toy_model()
    config = RetentionConfig(method=method, lam=0.5, accumulation=4)
    retainer = Retainer(micro, task_loss, student(micro), config)
    for k in range(4):
        part = slice(2 * k, 2 * k + 2)
        retainer.backward({n: v[part] for n, v in task.items()}, {n: v[part] for n, v in anchor.items()}, update=k == 3)
    for a, b in zip(whole.parameters(), micro.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_frozen_subset_and_per_group():
    model = toy_model()
    model[0].bias.requires_grad_(False)
    task, anchor = batches()
    params = [p for p in model.parameters() if p.requires_grad]
    config = RetentionConfig(method="agem", lam=0.1, per_group=True)
    Retainer(model, task_loss, student(model), config, groups=[params[:1], params[1:]]).backward(task, anchor)
    assert model[0].bias.grad is None and all(p.grad is not None for p in params)


def test_fp16_scaler_skips_a_non_finite_step_and_its_lambda_update():
    model = toy_model()
    task, anchor = batches()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(epsilon=0.0, lam_lr=1.0), scaler=scaler)
    want, _, _ = _reference(model, task, anchor, 0.0)
    retainer.backward(task, anchor)
    scaler.unscale_(opt)
    _assert_grads(model, want, rtol=1e-4)  # projected on unscaled gradients, rescaled
    scaler.step(opt)
    scaler.update()
    assert retainer.dual.lam > 0
    lam, before = retainer.dual.lam, [p.detach().clone() for p in model.parameters()]
    bad = {"x": task["x"], "y": task["y"] * float("inf")}
    stats = retainer.backward(bad, anchor)
    scaler.step(opt)
    scaler.update()
    assert float(stats["finite"]) == 0.0 and retainer.dual.skipped == 1 and retainer.dual.lam == lam
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_bf16_autocast_gives_finite_float32_dots():
    model = toy_model()
    task, anchor = batches()
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(lam=0.2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = retainer.backward(task, anchor)
    assert stats["cos_act_ret"].dtype == torch.float32 and bool(torch.isfinite(stats["cos_act_ret"]))
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_state_dict_restores_lambda():
    model = toy_model()
    task, anchor = batches()
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(epsilon=0.0))
    for _ in range(3):
        retainer.backward(task, anchor)
    other = Retainer(model, task_loss, student(model), RetentionConfig(epsilon=0.0))
    other.load_state_dict(retainer.state_dict())
    assert other.dual.lam == retainer.dual.lam > 0 and other.dual.history == retainer.dual.history


def test_alignment_is_minus_one_for_a_plain_sgd_step_on_the_retention_gradient():
    model = toy_model()
    task, anchor = batches()
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(method="fixed", lam=1.0))
    retainer.backward({"x": task["x"], "y": model(task["x"]).detach()}, anchor)  # L_act = 0: g = g_ret
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert float(retainer.alignment(before)) == pytest.approx(-1.0, abs=1e-4)
