"""``retain_every=k``: the retention pass on steps 0, k, 2k, ... only. Checked against loops written
here with the Retainer's public pieces: k=1 is the every-step run bit for bit; with k=2 each odd
step is a plain step (L_act backward, clip, optimiser step; no anchor drawn, λ untouched); a run
stopped and resumed from the step's state ends where an uninterrupted one does; ``retain_train``
records λ once per retention step."""

import copy

import numpy as np
import pytest
import torch
from _toy import student as toy_student
from _toy import task_loss, toy_model

from policylens.anchors import build_cache
from policylens.retain import Retainer, RetainTrainConfig, RetentionConfig, retain_train, retention_step


class _Anchors:
    """A toy anchor set: ``len`` and ``batch(rows)`` as AnchorSet gives them."""

    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(7)
        self.x, self.t = torch.randn(n, 4, generator=g), torch.randn(n, 8, generator=g) * 0.5

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, rows) -> dict:
        rows = torch.as_tensor(np.asarray(rows))
        return {"x": self.x[rows], "target_features": self.t[rows], "sample_index": rows}


def _tasks(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    return [{"x": torch.randn(6, 4, generator=g), "y": torch.randn(6, 2, generator=g) * 3} for _ in range(n)]


RETENTION = RetentionConfig(epsilon=0.0, method="craft", lam_lr=5.0, projection="active")


def _run(k: int, steps: int, start: dict | None = None, stop: int | None = None):
    model = toy_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    anchors = _Anchors()
    config = RetainTrainConfig(batch_size=6, anchor_batch_size=5, retain_every=k, seed=4, log_every=1)
    step = retention_step(Retainer(model, task_loss, toy_student(model), RETENTION), anchors, config)
    if start is not None:
        model.load_state_dict(start["model"])
        opt.load_state_dict(copy.deepcopy(start["opt"]))  # AdamW keeps the loaded step tensors
        step.load_state_dict(start["step"])
    done = len(step.series["loss_act"])
    for batch in _tasks(steps)[done : stop or steps]:
        step(model, batch, opt)
    state = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict())}
    return model, step, {**state, "step": copy.deepcopy(step.state_dict())}


def _reference(k: int, steps: int):
    """The loop by hand: anchor rows drawn from the step's generator on retention steps only."""
    model = toy_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    retainer = Retainer(model, task_loss, toy_student(model), RETENTION)
    rng, anchors, lams = np.random.default_rng(4 + 1), _Anchors(), []
    for i, batch in enumerate(_tasks(steps)):
        if i % k == 0:
            retainer.backward(batch, anchors.batch(rng.integers(0, len(anchors), 5)))
            lams.append(float(retainer.dual.value(torch.device("cpu"))))
        else:
            for p in model.parameters():
                p.grad = None
            task_loss(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        opt.step()
    return model, lams


@pytest.mark.parametrize("k", [1, 2, 3])
def test_retain_every_k_equals_the_loop_with_plain_steps_between(k):
    model, step, _ = _run(k, 7)
    ref, lams = _reference(k, 7)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    assert step.retainer.dual.state_dict()["history"] == pytest.approx(lams, rel=0, abs=0)
    ret = np.asarray([float(v) for v in step.series["loss_ret"]])
    assert np.isfinite(ret[::k]).all() and (k == 1 or np.isnan(np.delete(ret, np.s_[::k])).all())


def test_an_odd_step_with_k2_draws_no_anchor_and_leaves_lambda():
    model, step, _ = _run(2, 4, stop=3)  # three steps: retention, plain, retention
    before, draws = step.retainer.dual.state_dict(), step.rng.bit_generator.state
    out = step(model, _tasks(4)[3], torch.optim.AdamW(model.parameters(), lr=1e-2))
    assert "loss_ret" not in out and step.rng.bit_generator.state == draws  # no anchor drawn
    assert step.retainer.dual.state_dict() == before  # λ untouched


def test_odd_step_weights_equal_a_plain_step():
    _, _, saved = _run(2, 4, stop=3)
    model, _, _ = _run(2, 4, start=saved)  # step 3 (plain) through the retention step
    plain = toy_model()
    plain.load_state_dict(saved["model"])
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt.load_state_dict(saved["opt"])
    task_loss(plain, _tasks(4)[3]).backward()
    torch.nn.utils.clip_grad_norm_(list(plain.parameters()), 1.0)
    opt.step()
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("stop", [3, 4])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(stop):
    whole, step, _ = _run(2, 8)
    _, _, saved = _run(2, 8, stop=stop)
    resumed, again, _ = _run(2, 8, start=saved)
    for p, q in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert again.retainer.dual.state_dict() == step.retainer.dual.state_dict()


def test_micro_steps_of_one_step_must_agree_on_retain():
    model = toy_model()
    retainer = Retainer(model, task_loss, toy_student(model), RetentionConfig(accumulation=2))
    batch = _tasks(1)[0]
    retainer.backward(batch, None, update=False, retain=False)
    with pytest.raises(ValueError, match="retain=True on micro-step 1"):
        retainer.backward(batch, _Anchors().batch([0, 1]), update=True, retain=True)


def test_retain_every_is_checked():
    with pytest.raises(ValueError, match="retain_every=0"):
        RetainTrainConfig(retain_every=0)


def test_retain_train_updates_lambda_on_retention_steps_only(tmp_path):
    cache = tmp_path / "cache"
    build_cache("tiny_vla", "synthetic:4", str(cache), kind="bridge", batch_size=4, progress=False)
    rng = np.random.default_rng(0)
    episodes = [
        {
            "images": {
                c: rng.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8) for c in ("varied_camera_1", "hand_camera")
            },
            "state": rng.normal(size=(4, 7)).astype(np.float32),
            "action": rng.normal(size=(4, 7)).astype(np.float32),
            "instruction": "reach",
        }
    ]
    cfg = RetainTrainConfig(steps=3, batch_size=2, anchor_batch_size=1, retain_every=2, warmup=1, task_stats=False)
    summary = retain_train("tiny_vla", cache, episodes, tmp_path / "run", cfg, RetentionConfig(epsilon=0.0, lam_lr=1e3))
    assert len(summary["lambda_history"]) == 2 and summary["lambda"] > 0  # steps 0 and 2
    assert summary["final_loss_ret"] is not None and np.isfinite(summary["final_loss_ret"])
    assert summary["above_epsilon"] == 1.0
