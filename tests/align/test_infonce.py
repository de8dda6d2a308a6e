"""InfoNCE against the loss written out with loops (float64), temperature clamping, multi-positive
keys, the FIFO queue and bf16 autocast."""

import math

import pytest
import torch

from policylens.align._infonce import InfoNCE


def _unit(rows):
    out = []
    for r in rows:
        n = math.sqrt(sum(v * v for v in r))
        out.append([v / n for v in r])
    return out


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def reference(query, target, scale, keys=None, queue=(), queue_keys=None):
    """The module docstring's loss, one row at a time."""
    q, t, u = _unit(query.tolist()), _unit(target.tolist()), _unit(list(queue))
    m = len(q)
    keys = [tuple(k) if isinstance(k, list) else (k,) for k in keys.tolist()] if keys is not None else list(range(m))
    qk = [tuple(k) for k in queue_keys.tolist()] if queue_keys is not None else [None] * len(u)
    loss_q = 0.0
    for i in range(m):
        denom = sum(math.exp(scale * _dot(q[i], t[k])) for k in range(m))
        denom += sum(math.exp(scale * _dot(q[i], u[k])) for k in range(len(u)) if qk[k] != keys[i])
        pos = [j for j in range(m) if keys[j] == keys[i]]
        loss_q += -sum(math.log(math.exp(scale * _dot(q[i], t[j])) / denom) for j in pos) / len(pos)
    loss_t = 0.0
    for j in range(m):
        denom = sum(math.exp(scale * _dot(q[k], t[j])) for k in range(m))
        pos = [i for i in range(m) if keys[i] == keys[j]]
        loss_t += -sum(math.log(math.exp(scale * _dot(q[i], t[j])) / denom) for i in pos) / len(pos)
    return (loss_q / m + loss_t / m) / 2


def _batch(m=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g), torch.randn(m, d, generator=g)


def test_one_key_per_row_is_clip_and_matches_the_loops():
    q, t = _batch()
    nce = InfoNCE(temperature=0.1)
    loss = nce(q, t)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference(q, t, 10.0), rel=1e-5)
    logits = 10.0 * torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(t, dim=1).T
    labels = torch.arange(6)
    clip = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    assert loss.item() == pytest.approx(clip.item(), rel=1e-5)


def test_multi_positive_frame_patch_keys_match_the_loops():
    q, t = _batch(m=7)
    keys = torch.tensor([[0, 0], [0, 1], [1, 0], [0, 1], [2, 2], [1, 0], [0, 1]])  # rows 1, 3, 6 share a key
    loss = InfoNCE(temperature=0.2)(q, t, keys)
    assert loss.item() == pytest.approx(reference(q, t, 5.0, keys), rel=1e-5)
    flat = keys[:, 0] * 100 + keys[:, 1]  # the same grouping as 1-D ids
    assert InfoNCE(temperature=0.2)(q, t, flat).item() == pytest.approx(loss.item(), rel=1e-6)
    assert loss.item() != pytest.approx(InfoNCE(temperature=0.2)(q, t).item(), rel=1e-3)


def test_gradients_match_autograd_through_the_loop_formula():
    q, t = _batch(m=5, d=4, seed=3)
    keys = torch.tensor([0, 1, 1, 2, 0])
    q1, t1 = q.clone().requires_grad_(), t.clone().requires_grad_()
    nce = InfoNCE(temperature=0.5)
    nce(q1, t1, keys).backward()
    q2, t2 = q.double().requires_grad_(), t.double().requires_grad_()
    qn, tn = q2 / q2.norm(dim=1, keepdim=True), t2 / t2.norm(dim=1, keepdim=True)
    total = 0
    for direction in (0, 1):
        for i in range(5):
            s = [2.0 * (qn[i] @ tn[k] if direction == 0 else qn[k] @ tn[i]) for k in range(5)]
            log_denom = torch.logsumexp(torch.stack(s), 0)
            pos = [j for j in range(5) if keys[j] == keys[i]]
            total = total - sum(s[j] - log_denom for j in pos) / len(pos) / 5 / 2
    total.backward()
    torch.testing.assert_close(q1.grad, q2.grad.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(t1.grad, t2.grad.float(), rtol=1e-4, atol=1e-6)
    assert nce.logit_scale.grad is not None and torch.isfinite(nce.logit_scale.grad)


def test_temperature_is_log_parameterised_and_clamped():
    nce = InfoNCE(temperature=0.07)
    assert nce.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        nce.logit_scale.fill_(math.log(1 / 0.001))  # an optimiser overshot to τ = 0.001
    assert nce.temperature == pytest.approx(0.01)
    q, t = _batch()
    loss = nce(q, t)
    assert nce.logit_scale.item() == pytest.approx(math.log(100.0))  # clamped in place to τ = 0.01
    assert loss.item() == pytest.approx(reference(q, t, 100.0), rel=1e-5)
    loss.backward()
    assert nce.logit_scale.grad.abs().item() > 0  # the gradient survives at the bound
    with torch.no_grad():
        nce.logit_scale.fill_(-3.0)  # τ = e³ > max_temperature = 1
    nce(q, t)
    assert nce.logit_scale.item() == pytest.approx(0.0) and nce.temperature == pytest.approx(1.0)


def test_temperature_arguments_are_checked_and_a_fixed_temperature_is_a_buffer():
    with pytest.raises(ValueError, match="temperature=2.0"):
        InfoNCE(temperature=2.0)
    with pytest.raises(ValueError, match="min_temperature"):
        InfoNCE(min_temperature=0.5, max_temperature=0.1)
    fixed = InfoNCE(temperature=0.1, learn_temperature=False)
    assert not list(fixed.parameters()) and "logit_scale" in dict(fixed.named_buffers())


def test_queue_is_fifo_detached_and_its_targets_are_negatives():
    nce = InfoNCE(temperature=0.1, queue_size=5)
    q1, t1 = _batch(m=3, seed=1)
    q2, t2 = _batch(m=3, seed=2)
    t1 = t1.requires_grad_()
    first = nce(q1, t1)
    assert first.item() == pytest.approx(reference(q1, t1.detach(), 10.0), rel=1e-5)  # queue empty on step 1
    assert nce.queue.shape == (3, 5) and not nce.queue.requires_grad
    torch.testing.assert_close(nce.queue, torch.nn.functional.normalize(t1.detach(), dim=1))
    second = nce(q2, t2)
    assert second.item() == pytest.approx(reference(q2, t2, 10.0, queue=t1.detach().tolist()), rel=1e-5)
    # FIFO: 3 + 3 targets, capacity 5 -> the oldest one is dropped
    expected = torch.nn.functional.normalize(torch.cat([t1.detach(), t2])[1:], dim=1)
    torch.testing.assert_close(nce.queue, expected)
    nce.eval()
    nce(q1, t1)
    torch.testing.assert_close(nce.queue, expected)  # evaluation does not enqueue
    nce.reset_queue()
    assert nce.queue is None


def test_queued_targets_with_the_same_key_are_not_negatives():
    nce = InfoNCE(temperature=0.1, queue_size=8)
    q1, t1 = _batch(m=3, seed=1)
    q2, t2 = _batch(m=3, seed=2)
    k1, k2 = torch.tensor([[0, 0], [0, 1], [1, 0]]), torch.tensor([[1, 0], [2, 0], [2, 1]])  # (1, 0) seen again
    t1[2] = q2[0]  # the stale copy of row 0's positive would be its hardest "negative"
    nce(q1, t1, k1)
    loss = nce(q2, t2, k2)
    want = reference(q2, t2, 10.0, k2, queue=t1.tolist(), queue_keys=k1)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert loss.item() != pytest.approx(reference(q2, t2, 10.0, k2, queue=t1.tolist()), rel=1e-4)
    assert nce.queue_keys.tolist() == k1.tolist() + k2.tolist()


def test_bf16_autocast_gives_a_finite_float32_loss():
    q, t = _batch(m=8, d=16)
    lin = torch.nn.Linear(16, 16)
    nce = InfoNCE(queue_size=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = lin(q), lin(t)
        assert a.dtype == torch.bfloat16
        loss = nce(a, b, torch.arange(8) // 2)
        loss2 = nce(a, b)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(loss2)
    loss.backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_bad_inputs_name_the_parameter():
    q, t = _batch()
    with pytest.raises(ValueError, match="query"):
        InfoNCE()(q, t[:5])
    with pytest.raises(TypeError, match="keys dtype"):
        InfoNCE()(q, t, torch.zeros(6))
    with pytest.raises(ValueError, match="keys shape"):
        InfoNCE()(q, t, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="queue_size"):
        InfoNCE(queue_size=-1)
    nce = InfoNCE(queue_size=4)
    nce(q, t, torch.zeros(6, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="reset_queue"):
        nce(q, t, torch.zeros(6, 3, dtype=torch.long))
