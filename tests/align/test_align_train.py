"""``train_alignment`` / ``distill_student`` on tiny stores of two simulated 56 px DROID episodes:
outputs (checkpoint, TensorBoard, eval JSON, histogram), resume with optimiser and temperature,
refusal of other settings, non-finite step skipping, the spatial-forcing baseline, distillation.
(Named ``test_align_train`` because ``tests/retain/test_train.py`` holds the basename.)"""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from policylens.align import (
    AlignTrainConfig,
    Amp,
    DistillConfig,
    align_step,
    build_encoder,
    distill_student,
    extract_features,
    ingest_depth,
    load_aligned,
    train_alignment,
)
from policylens.data import open_episodes
from policylens.models import TrainingInterrupted
from policylens.sim.pybullet import generate_episodes

CAM = "varied_camera_1"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("align_train")
    generate_episodes("reach", 2, root / "droid", fmt="droid", image_size=56, progress=False)
    eps = open_episodes(f"droid:{root / 'droid'}")
    for name in ("dinov2", "siglip"):
        enc, _ = build_encoder(name)
        extract_features(eps, enc, root / name, camera=CAM, dtype="float32", progress=False)
    ingest_depth(eps, root / "points", camera=CAM, points=64, stride=2, progress=False)
    return root


def cfg(**kw):
    base = {"steps": 4, "batch_size": 4, "dim": 16, "eval_every": 2, "save_every": 2, "held_out": 0.5}
    return AlignTrainConfig(**{**base, "progress": False, **kw})


def train(stores, out, step=None, **kw):
    return train_alignment(stores / "points", [stores / "dinov2", stores / "siglip"], out, cfg(**kw), step=step)


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    return out, train(stores, out)


def test_train_writes_checkpoint_tensorboard_and_eval(trained):
    out, res = trained
    assert res["step"] == 4 and len(res["losses"]) == 4 and res["skipped"] == 0
    for name in ("train_state.safetensors", "model.safetensors", "config.json", "run.json", "eval.md"):
        assert (out / name).is_file(), name
    assert (out / "similarity_hist.png").stat().st_size > 1000
    ev = json.loads((out / "eval.json").read_text())
    assert set(ev["reports"]) == {"aligned infonce", "ridge 2d->3d", "ridge 3d->2d", "aligned cross-batch"}
    assert not set(ev["train_episodes"]) & set(ev["held_out_episodes"]) and ev["held_out_episodes"]
    assert ev["reports"]["aligned infonce"]["pool"] == "within-frame" and ev["rows"]["held_out"] > 0
    acc = EventAccumulator(str(out / "tb")).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/temperature", "fusion/gate_0", "fusion/entropy", "eval/top1_2d3d"} <= tags
    assert [e.step for e in acc.Scalars("eval/top1_2d3d")] == [2, 4]
    model = load_aligned(out)
    assert model.names == ["dinov2", "siglip"] and not any(p.requires_grad for p in model.parameters())


def test_resume_continues_with_optimizer_and_temperature(stores, tmp_path):
    out = tmp_path / "run"
    train(stores, out, steps=2)
    saved = load_file(str(out / "train_state.safetensors"))
    seen = {}

    def spy(model, batch, opt, amp):
        if not seen:
            seen["scale"] = model.loss.logit_scale.detach().clone()
            seen["opt_step"] = float(opt.state_dict()["state"][0]["step"])
            seen["exp_avg"] = opt.state_dict()["state"][0]["exp_avg"].clone()
        return align_step(model, batch, opt, amp)

    res = train(stores, out, step=spy, steps=4)
    assert res["step"] == 4 and len(res["losses"]) == 2
    torch.testing.assert_close(seen["scale"], saved["model.loss.logit_scale"])
    assert seen["opt_step"] == 2.0
    torch.testing.assert_close(seen["exp_avg"], saved["optim.0.exp_avg"])
    assert json.loads((out / "train_state.json").read_text())["step"] == 4
    assert train(stores, out, steps=4)["losses"] == []  # done: nothing to train, outputs rewritten


def test_other_settings_are_refused(trained, stores):
    out, _ = trained
    with pytest.raises(FileExistsError, match="config.lr 0.001 there, 0.01 now"):
        train(stores, out, lr=1e-2)
    with pytest.raises(FileExistsError, match="config.objective"):
        train(stores, out, objective="spatial_forcing")


def test_non_finite_step_is_skipped(stores, tmp_path):
    calls, snap = [], {}

    def poison(model, batch, opt, amp):
        calls.append(1)
        if len(calls) == 2:
            batch["features"]["dinov2"][0, 0, 0, 0, 0] = float("nan")
            snap["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        logs = align_step(model, batch, opt, amp)
        if len(calls) == 2:
            snap["logs"], snap["after"] = logs, {k: v.clone() for k, v in model.state_dict().items()}
        return logs

    res = train(stores, tmp_path / "run", step=poison)
    assert snap["logs"]["skipped"] == 1.0 and res["skipped"] == 1 and res["step"] == 4
    for k, v in snap["before"].items():
        torch.testing.assert_close(snap["after"][k], v, msg=k)
    assert all(torch.isfinite(p).all() for p in load_aligned(tmp_path / "run").parameters())
    assert json.loads((tmp_path / "run/train_state.json").read_text())["extra"]["skipped"] == 1


def test_spatial_forcing_baseline_runs_under_bf16(stores, tmp_path):
    res = train(stores, tmp_path / "sf", objective="spatial_forcing", fusion="gate", amp="bf16", steps=3)
    assert res["step"] == 3 and all(torch.isfinite(torch.tensor(res["losses"])))
    ev = json.loads((tmp_path / "sf/eval.json").read_text())
    assert "aligned spatial_forcing" in ev["reports"] and ev["objective"] == "spatial_forcing"
    model = load_aligned(tmp_path / "sf")
    torch.manual_seed(0)
    fresh = type(model)(model.meta)  # the frozen random PointNet teacher is the one it started with
    torch.testing.assert_close(model.points.state_dict(), fresh.points.state_dict())


def test_distill_student_loss_drops_and_resumes(trained, stores, tmp_path):
    aligned, _ = trained
    config = DistillConfig(steps=25, batch_size=4, hidden=32, lr=1e-2, eval_every=10, save_every=10, progress=False)
    res = distill_student(aligned, stores / "dinov2", tmp_path / "student", config)
    losses = res["losses"]
    assert len(losses) == 25 and sum(losses[-5:]) / 5 < 0.5 * losses[0]
    ev = json.loads((tmp_path / "student/eval.json").read_text())
    assert ev["step"] == 25 and ev["held_out_loss"] > 0 and "within-frame" in ev["summary"]
    assert (tmp_path / "student/model.safetensors").is_file()
    more = distill_student(
        aligned, stores / "dinov2", tmp_path / "student", DistillConfig(**{**vars(config), "steps": 27})
    )
    assert more["step"] == 27 and len(more["losses"]) == 2
    with pytest.raises(FileExistsError, match="config.hidden"):
        distill_student(aligned, stores / "dinov2", tmp_path / "student", DistillConfig(hidden=8, progress=False))
    with pytest.raises(FileNotFoundError, match="align train"):
        distill_student(tmp_path / "nowhere", stores / "dinov2", tmp_path / "s2", config)


def test_config_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"objective='clip'; use one of \['infonce', 'spatial_forcing'\]"):
        AlignTrainConfig(objective="clip")
    with pytest.raises(ValueError, match="steps=0; expected >= 1"):
        AlignTrainConfig(steps=0)
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        Amp("fp16", torch.device("cpu"))


class Crash(Exception):
    """A failure without a save (the process dies): the rerun starts from the last save_every checkpoint."""


def stop_at(call, how, step):
    """``step`` that on its ``call``-th call sends SIGINT (the loop saves after the step) or crashes after it."""
    calls = []

    def wrapped(*args):
        out = step(*args)
        calls.append(1)
        if len(calls) == call and how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
        if len(calls) == call and how == "crash":
            raise Crash
        return out

    return wrapped


def assert_same_weights(a, b):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert not [k for k in wa if not torch.equal(wa[k], wb[k])]


# 8 training frames in batches of 4: a pass is 2 steps, so 7 steps cross 3 pass ends; max_rows=100 of the
# 256 rows a batch has makes every step draw a row subset
RESUME = {"steps": 7, "save_every": 3, "max_rows": 100}
STOPS = [("sigint", 5, 5), ("sigint", 4, 4), ("crash", 5, 3)]  # how, at which step, the step it resumes from


@pytest.fixture(scope="module")
def whole(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    return out, train(stores, out, **RESUME)


@pytest.mark.parametrize(("how", "at", "resumes_from"), STOPS)
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(stores, whole, tmp_path, how, at, resumes_from):
    """The data order (mid-pass and at a pass end), the row subsets and the optimiser resume exactly."""
    out = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted if how == "sigint" else Crash):
        train(stores, out, step=stop_at(at, how, align_step), **RESUME)
    assert json.loads((out / "train_state.json").read_text())["step"] == resumes_from
    res = train(stores, out, **RESUME)
    assert res["losses"] == whole[1]["losses"][resumes_from:]
    assert_same_weights(out, whole[0])


@pytest.mark.parametrize(("how", "at", "resumes_from"), STOPS[::2])
def test_interrupted_and_resumed_distillation_equals_the_uninterrupted_one(
    trained, stores, tmp_path, monkeypatch, how, at, resumes_from
):
    import policylens.align._student as student

    aligned, _ = trained
    config = DistillConfig(steps=7, batch_size=4, hidden=16, eval_every=2, save_every=3, progress=False)
    whole = distill_student(aligned, stores / "dinov2", tmp_path / "whole", config)
    with monkeypatch.context() as patch:
        patch.setattr(student, "_distill_step", stop_at(at, how, student._distill_step))
        with pytest.raises(TrainingInterrupted if how == "sigint" else Crash):
            distill_student(aligned, stores / "dinov2", tmp_path / "cut", config)
    assert json.loads((tmp_path / "cut/train_state.json").read_text())["step"] == resumes_from
    res = distill_student(aligned, stores / "dinov2", tmp_path / "cut", config)
    assert res["losses"] == whole["losses"][resumes_from:]
    assert_same_weights(tmp_path / "cut", tmp_path / "whole")
