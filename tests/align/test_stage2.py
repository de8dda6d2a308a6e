"""Stage 2: one action head per feature source on tiny stores of simulated 56 px reach episodes —
the encoders rebuilt from the stores, rollout inputs equal to the cached training inputs, chunk
targets, masking, training that fits, resume without re-recording, closed-loop evaluation, the CLI,
and clear errors."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from policylens.align import (
    SOURCES,
    ActionHead,
    AlignTrainConfig,
    DistillConfig,
    FeatureSource,
    HeadConfig,
    HeadShape,
    build_encoder,
    distill_student,
    encoder_from_store,
    evaluate_action_head,
    extract_features,
    ingest_depth,
    instruction_code,
    load_action_head,
    train_action_head,
    train_alignment,
)
from policylens.align._stage2 import _chunks, _episode_inputs
from policylens.cli.main import app
from policylens.data import open_episodes
from policylens.models import TrainingInterrupted
from policylens.sim.pybullet import SimEnv, generate_episodes, record_episode
from policylens.store import read_manifest

CAM = "varied_camera_1"


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    generate_episodes("reach", 2, root / "droid", fmt="droid", image_size=56, progress=False)
    eps = open_episodes(f"droid:{root / 'droid'}")
    feats = {}
    for name in ("dinov2", "siglip"):
        enc, model_id = build_encoder(name)
        feats[name] = root / name
        extract_features(eps, enc, feats[name], camera=CAM, dtype="float32", model_id=model_id, progress=False)
    ingest_depth(eps, root / "points", camera=CAM, points=64, stride=2, progress=False)
    loop = {"steps": 2, "batch_size": 4, "save_every": 2, "eval_every": 2, "progress": False}
    train_alignment(root / "points", feats, root / "aligned", AlignTrainConfig(dim=16, held_out=0.5, **loop))
    distill_student(root / "aligned", feats["dinov2"], root / "student", DistillConfig(hidden=16, **loop))
    return root


def head_cfg(**kw):
    base = {"episodes": 3, "steps": 3, "batch_size": 8, "width": 16, "eval_every": 2, "save_every": 2}
    return HeadConfig(**{**base, "progress": False, **kw})


def test_encoder_rebuilt_from_store_and_hash_checked(stage1, tmp_path):
    enc = encoder_from_store(stage1 / "dinov2")
    ref, _ = build_encoder("dinov2")
    frames = np.random.default_rng(0).integers(0, 255, (2, 56, 56, 3), dtype=np.uint8)
    assert torch.equal(enc.features(enc.preprocess(frames)[0]), ref.features(ref.preprocess(frames)[0]))
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(stage1 / "dinov2", bad)
    manifest = read_manifest(bad)
    manifest["meta"]["model_id"] = manifest["meta"]["model_id"].replace("seed=0", "seed=1")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="weights hash"):
        encoder_from_store(bad)


def test_chunks_repeat_the_last_action_and_instruction_code():
    a = np.arange(10, dtype=np.float32).reshape(5, 2)
    c = _chunks(a, 3)
    assert c.shape == (5, 3, 2)
    assert np.array_equal(c[0], a[:3]) and np.array_equal(c[3], a[[3, 4, 4]]) and np.array_equal(c[4], a[[4, 4, 4]])
    code = instruction_code("Reach the green cylinder")
    from policylens.align._sources import WORDS

    assert {w for w, x in zip(WORDS, code, strict=True) if x} == {"green", "cylinder"}


def test_head_ignores_invalid_tokens():
    torch.manual_seed(0)
    head = ActionHead(HeadShape(in_dim=6, cond_dim=4, width=8, queries=2, heads=2, horizon=3))
    tokens, cond = torch.randn(2, 5, 6), torch.randn(2, 4)
    valid = torch.tensor([[True, True, False, False, True], [True] * 5])
    out = head(tokens, valid, cond)
    changed = tokens.clone()
    changed[0, 2:4] = 100.0
    assert out.shape == (2, 3, 7)
    assert torch.allclose(head(changed, valid, cond), out, atol=1e-6)
    assert not torch.allclose(head(changed, torch.ones_like(valid), cond)[0], out[0], atol=1e-3)
    with pytest.raises(ValueError, match=r"\(B, N, 6\)"):
        head(torch.randn(2, 5, 5), valid, cond)


@pytest.mark.parametrize("kind", SOURCES)
def test_rollout_inputs_equal_the_cached_training_inputs(stage1, kind):
    """The policy encodes a live frame exactly as training encoded the recorded one."""
    src = FeatureSource(kind, stage1 / "aligned", stage1 / "student")
    cfg = head_cfg(source=kind)
    with SimEnv("reach", seed=0, image_size=56, render=True, cameras=(CAM,)) as env:
        cached = _episode_inputs(src, env, 0, cfg, seed=0)
    with SimEnv("reach", seed=0, image_size=56, render=True, cameras=(CAM,)) as env:
        rec = record_episode(env, 0, render=True, action_noise=cfg.action_noise)
        frame = rec["images"][CAM][:1]
        clouds = None
        if src.needs_depth:
            k, pose = rec["intrinsics"][CAM], rec["extrinsics"][CAM][0]
            clouds = [src.cloud(rec["depth"][CAM][0], frame[0], k, pose, np.random.default_rng([0, 0, 0]))]
        live = src.inputs(frame, clouds)
    for key, value in live.items():
        assert torch.equal(value[0], cached[f"in.{key}"][0]), key
    tokens, valid = src.tokens(live)
    assert tokens.shape[-1] == src.token_dim() and valid.any()
    assert cached["chunk"].shape[1:] == (cfg.horizon, 7)


def test_head_fits_its_training_frames(stage1, tmp_path):
    res = train_action_head(stage1 / "aligned", tmp_path / "h", head_cfg(steps=150, lr=3e-3, batch_size=16))
    assert res["losses"][-1] < 0.3 * res["losses"][0], (res["losses"][0], res["losses"][-1])
    assert np.isfinite(res["held_out_loss"])


def test_resume_keeps_the_recorded_inputs(stage1, tmp_path, monkeypatch):
    out = tmp_path / "h"
    train_action_head(stage1 / "aligned", out, head_cfg(source="points", steps=2))
    inputs = sorted((out / "inputs").glob("*.safetensors"))
    assert len(inputs) == 3
    stamp = [p.stat().st_mtime_ns for p in inputs]
    import policylens.align._stage2 as stage2

    monkeypatch.setattr(stage2, "record_episode", lambda *a, **k: pytest.fail("re-recorded an episode"))
    res = train_action_head(stage1 / "aligned", out, head_cfg(source="points", steps=4))
    assert res["step"] == 4 and [p.stat().st_mtime_ns for p in inputs] == stamp
    with pytest.raises(FileExistsError, match="source"):
        train_action_head(stage1 / "aligned", out, head_cfg(source="rgb", steps=4))
    state = load_file(str(out / "model.safetensors"))
    assert state["action_std"].shape == (7,) and torch.all(state["action_std"] > 0)


class Crash(Exception):
    """A failure without a save (the process dies): the rerun starts from the last save_every checkpoint."""


@pytest.mark.parametrize(("how", "resumes_from"), [("sigint", 5), ("crash", 3)])
def test_interrupted_and_resumed_head_equals_the_uninterrupted_one(stage1, tmp_path, monkeypatch, how, resumes_from):
    """Stopped after step 5 (SIGINT: saved there; a crash: the save_every=3 state), resumed to 7: the same
    batches (drawn with replacement) and weights, bit for bit."""
    import policylens.align._stage2 as stage2

    cfg = head_cfg(steps=7, save_every=3)
    whole = train_action_head(stage1 / "aligned", tmp_path / "whole", cfg)
    loop, calls = stage2._loop, []

    def stopping(out, model, opt, amp, step, *args):
        def wrapped(*a):
            logs = step(*a)
            calls.append(1)
            if len(calls) == 5 and how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)  # the loop saves after this step
            if len(calls) == 5 and how == "crash":
                raise Crash
            return logs

        return loop(out, model, opt, amp, wrapped, *args)

    with monkeypatch.context() as patch:
        patch.setattr(stage2, "_loop", stopping)
        with pytest.raises(TrainingInterrupted if how == "sigint" else Crash):
            train_action_head(stage1 / "aligned", tmp_path / "cut", cfg)
    assert json.loads((tmp_path / "cut/train_state.json").read_text())["step"] == resumes_from
    res = train_action_head(stage1 / "aligned", tmp_path / "cut", cfg)
    assert res["losses"] == whole["losses"][resumes_from:]
    a, b = load_file(str(tmp_path / "cut/model.safetensors")), load_file(str(tmp_path / "whole/model.safetensors"))
    assert a.keys() == b.keys() and not [k for k in a if not torch.equal(a[k], b[k])]


def test_rollout_in_closed_loop_and_cli(stage1, tmp_path):
    out = tmp_path / "h"
    runner = CliRunner()
    args = ["align", "head", "--aligned", str(stage1 / "aligned"), "--out", str(out), "--source", "student"]
    args += ["--student", str(stage1 / "student"), "--episodes", "3", "--steps", "2", "--width", "16"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "held-out loss" in res.output and "align rollout" in res.output
    policy = load_action_head(out)
    assert policy.k == 4
    ev = evaluate_action_head(out, episodes=2, progress=False)
    assert ev.n == 2 and len(ev.episode_length) == 2 and all(n > 0 for n in ev.episode_length)
    res = runner.invoke(app, ["align", "rollout", "--head", str(out), "--episodes", "1"])
    assert res.exit_code == 0, res.output
    assert "student" in res.output and json.loads((out / "rollout_seed0.json").read_text())["episodes"] == 1


def test_errors_name_the_fix(stage1, tmp_path):
    with pytest.raises(ValueError, match="source="):
        FeatureSource("depthmap", stage1 / "aligned")
    with pytest.raises(ValueError, match="align distill"):
        FeatureSource("student", stage1 / "aligned")
    with pytest.raises(FileNotFoundError, match="align distill"):
        FeatureSource("student", stage1 / "aligned", tmp_path)
    with pytest.raises(FileNotFoundError, match="align head"):
        load_action_head(tmp_path)
    with pytest.raises(ValueError, match="execute"):
        head_cfg(execute=9)
    with pytest.raises(ValueError, match="task"):
        head_cfg(task="juggle")
