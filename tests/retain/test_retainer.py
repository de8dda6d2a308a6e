"""The drop-in retention step: two separate backward passes, the combined gradient in .grad,
accumulation, AMP, and the state for resuming."""

import pytest
import torch
from _toy import batches, student, task_loss, toy_model

from policylens.retain import Retainer, RetentionConfig, agem_project, retention_loss


def _separate_reference(model, task, anchor, lam, project=True):
    params = list(model.parameters())
    g_act = torch.autograd.grad(task_loss(model, task), params)
    feats = student(model)({"x": anchor["x"]})["target_features"]
    g_ret = torch.autograd.grad(retention_loss(feats, anchor["target_features"]), params, allow_unused=True)
    if project:
        g_act, _, _ = agem_project(list(g_act), list(g_ret))
    return [a if r is None else a + lam * r for a, r in zip(g_act, g_ret, strict=True)], g_act, g_ret


def test_combined_gradient_comes_from_two_separate_passes():
    model = toy_model()
    task, anchor = batches()
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(method="craft", lam=0.7, epsilon=0.0))
    stats = retainer.backward(task, anchor)
    want, _, _ = _separate_reference(model, task, anchor, 0.7)
    for p, w in zip(model.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-7)
    assert float(stats["projected"]) == 1.0 and float(stats["cos_act_ret"]) < 0  # they did conflict
    # one combined backward would have given g_act + λ g_ret, unprojected: a different gradient
    naive, _, _ = _separate_reference(model, task, anchor, 0.7, project=False)
    assert max(float((p.grad - n).abs().max()) for p, n in zip(model.parameters(), naive, strict=True)) > 1e-3


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
    want, _, _ = _separate_reference(model, task, anchor, 0.0)
    retainer.backward(task, anchor)
    scaler.unscale_(opt)
    for p, w in zip(model.parameters(), want, strict=True):  # projected on unscaled gradients, rescaled
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)
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
