"""The attention job over DROID episodes: the output tree, float16 arrays that equal the maps
extracted directly, resume after a kill, and no mixing of runs with other settings."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from policylens.attention import AttentionRunConfig, run_attention
from policylens.models import load_model

CONFIG = AttentionRunConfig(layers=(1,), every=4, heads=True, videos=True)


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("attn")
    generate_episodes("reach", 2, root / "eps", seed=0, fmt="droid", image_size=112, progress=False)
    return root / "eps"


def test_output_tree_and_arrays(droid, tmp_path):
    done = run_attention("tiny_vla", f"droid:{droid}", tmp_path / "out", CONFIG, progress=False)
    assert len(done) == 2
    folder = tmp_path / "out" / "success" / "2026-01-01" / "2026-01-01-00h-00m-00s"
    assert done[0]["folder"] == str(folder) and done[0]["keyframes"][:2] == [0, 4]
    for name in (
        "00000/prefix_L1_max.jpg",
        "00004/suffix_L1_max.jpg",
        "00000/L1_prefix_heads/head_03.jpg",
        "L01_prefix_max.webm",
        "L01_suffix_head00.mp4",
        "done.json",
    ):
        assert (folder / name).is_file(), name
    group = zarr.open_group(str(folder / "attention.zarr"), mode="r")
    maps = group["prefix_L1/hand_camera"][:]
    assert maps.dtype == np.float16 and maps.shape == (len(done[0]["keyframes"]), 4, 8, 8)
    mass = group["mass/suffix_L1/image"][:]
    assert mass.shape == (len(done[0]["keyframes"]), 4) and (mass > 0).all() and (mass <= 1.001).all()
    # the stored map of keyframe 4 equals a direct extraction on the same frame
    from policylens.attention import extract_attention
    from policylens.data import open_episodes

    model = load_model("tiny_vla").eval()
    ep = open_episodes(f"droid:{droid}")[0]
    images = {c: torch.from_numpy(np.asarray(ep.frame(c, 4)))[None] for c in model.config.cameras}
    batch = model.make_batch(images, [ep.instruction], torch.as_tensor(ep.proprio[4:5], dtype=torch.float32))
    direct = extract_attention(model, batch, [1], ["prefix"])[("prefix", 1)].maps["hand_camera"][0]
    torch.testing.assert_close(torch.from_numpy(maps[1].astype(np.float32)), direct, rtol=0, atol=2e-3)


def test_resume_skips_finished_and_redoes_half_written_episodes(droid, tmp_path):
    out = tmp_path / "out"
    first = run_attention("tiny_vla", f"droid:{droid}", out, CONFIG, progress=False)
    second_folder = first[1]["folder"]
    (out / second_folder.split(str(out) + "/")[1] / "done.json").unlink()  # as if killed before the marker
    stale = out / second_folder.split(str(out) + "/")[1] / "stale.txt"
    stale.write_text("left by the killed run")
    marker = (out / first[0]["folder"].split(str(out) + "/")[1] / "done.json").stat().st_mtime_ns
    again = run_attention("tiny_vla", f"droid:{droid}", out, CONFIG, progress=False)
    assert again == first
    assert (out / first[0]["folder"].split(str(out) + "/")[1] / "done.json").stat().st_mtime_ns == marker
    assert not stale.exists()  # the half-written episode was removed and redone


def test_other_settings_are_refused(droid, tmp_path):
    run_attention("tiny_vla", f"droid:{droid}", tmp_path / "out", CONFIG, progress=False)
    other = AttentionRunConfig(layers=(2,), every=4, heads=True, videos=True)
    with pytest.raises(ValueError, match="layers differ"):
        run_attention("tiny_vla", f"droid:{droid}", tmp_path / "out", other, progress=False)
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(ValueError, match="every=0"):
        AttentionRunConfig(every=0)
    assert json.loads(json.dumps(CONFIG.__dict__, default=list))["every"] == 4


def test_object_overlap_rows_per_keyframe_and_per_run(droid, tmp_path):
    done = run_attention("tiny_vla", f"droid:{droid}", tmp_path / "out", CONFIG, progress=False)
    frames = json.loads((tmp_path / "out" / done[0]["folder"].split("/out/")[1] / "overlap.json").read_text())
    objects = {r["object"] for r in frames}
    assert {"target", "distractor", "random", "arm_object"} <= objects
    target = [r for r in frames if r["object"] == "target"]
    assert all(0 <= r["mass"] <= 1 and 0 < r["area"] < 1 for r in target)
    run = json.loads((tmp_path / "out" / "overlap.json").read_text())
    row = next(r for r in run if r["object"] == "random" and r["outcome"] == "all" and r["phase"] == "prefix")
    assert row["n_episodes"] == 2 and row["n_frames"] > 2
    assert row["mass_low"] <= row["mass"] <= row["mass_high"]
    # equal-area random blobs sit near chance: E/A close to 1 on average
    assert 0.3 < row["ratio"] < 3


def test_lerobot_episodes_are_read_too(tmp_path):
    from policylens.sim.pybullet import generate_episodes

    root = generate_episodes("reach", 1, tmp_path / "lr", seed=0, fmt="lerobot", image_size=56, progress=False)[0]
    cfg = AttentionRunConfig(layers=(1,), every=8, heads=False, videos=False)
    done = run_attention("tiny_vla", f"lerobot:{root}", tmp_path / "out", cfg, progress=False)
    assert done[0]["folder"].endswith("undated/episode_000000") and (tmp_path / "out").is_dir()
    assert len(done[0]["keyframes"]) >= 1


def test_two_workers_write_the_same_outputs(droid, tmp_path):
    cfg = AttentionRunConfig(layers=(1,), every=4, heads=False, videos=False)
    one = run_attention("tiny_vla", f"droid:{droid}", tmp_path / "one", cfg, progress=False)
    two = run_attention("tiny_vla", f"droid:{droid}", tmp_path / "two", cfg, progress=False, workers=2)
    assert [d["keyframes"] for d in one] == [d["keyframes"] for d in two]
    for a, b in zip(one, two, strict=True):
        za = zarr.open_group(str(Path(a["folder"]) / "attention.zarr"), mode="r")
        zb = zarr.open_group(str(Path(b["folder"]) / "attention.zarr"), mode="r")
        np.testing.assert_array_equal(za["prefix_L1/hand_camera"][:], zb["prefix_L1/hand_camera"][:])


FAST = AttentionRunConfig(layers=(1,), every=4, heads=False, videos=False, overlap=False)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (AttentionRunConfig(layers=(4,), every=4), r"layers=\[4\] \(prefix phase\).*llm has 4 layers"),
        (AttentionRunConfig(layers=(1, -3), every=4), "1 and -3 are the same llm layer"),
        (AttentionRunConfig(layers=(1,), step=10), "10 flow steps; pass 0..9"),
        (AttentionRunConfig(layers=(1,), keyframes=(99,)), r"keyframes=\[99\]: episode .* has \d+ frames"),
        (AttentionRunConfig(layers=(1,), camera_map={"hand_camera": "wrist"}), r"camera_map maps onto \['wrist'\]"),
        (
            AttentionRunConfig(layers=(1,), camera_map={"side": "hand_camera"}),
            r"camera_map names dataset camera 'side'",
        ),
    ],
)
def test_bad_settings_are_refused_before_out_is_written(droid, tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        run_attention("tiny_vla", f"droid:{droid}", tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="not a folder"):
        run_attention("tiny_vla", str(tmp_path / "nowhere"), tmp_path / "out", FAST, progress=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", "global"), ("phases", ("prefix", "prefix")), ("phases", ()), ("step", "first"), ("layers", ())],
)
def test_config_refuses_values_the_run_cannot_draw(field, value):
    with pytest.raises(ValueError, match=f"AttentionRunConfig.{field}="):
        AttentionRunConfig(**{field: value})


def test_a_run_that_finished_nothing_leaves_no_claim(droid, tmp_path, monkeypatch):
    from policylens.attention import _pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(_pipeline, "extract_attention", broken)
    with pytest.raises(RuntimeError, match="the model broke"):
        run_attention("tiny_vla", f"droid:{droid}", tmp_path / "out", FAST, progress=False)
    assert not (tmp_path / "out").exists()  # it did not exist before: removed, claim and half-written episode
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        run_attention("tiny_vla", f"droid:{droid}", tmp_path / "kept", FAST, progress=False)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]
    monkeypatch.undo()
    other = AttentionRunConfig(layers=(2,), every=4, heads=False, videos=False, overlap=False)
    assert len(run_attention("tiny_vla", f"droid:{droid}", tmp_path / "kept", other, progress=False)) == 2


def test_interrupt_keeps_finished_episodes_and_the_same_call_resumes(droid, tmp_path, monkeypatch):
    from policylens.attention import _pipeline
    from policylens.attention._pipeline import AttentionInterrupted

    calls = []
    real = _pipeline._episode

    def interrupted_second(*args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(_pipeline, "_episode", interrupted_second)
    out = tmp_path / "out"
    with pytest.raises(AttentionInterrupted, match=f"1 of 2 episodes done in {out}; rerun the same") as info:
        run_attention("tiny_vla", f"droid:{droid}", out, FAST, progress=False)
    assert (info.value.done, info.value.total) == (1, 2) and isinstance(info.value, KeyboardInterrupt)
    assert (out / "run.json").is_file() and len(list(out.glob("*/*/*/done.json"))) == 1
    other = AttentionRunConfig(layers=(2,), every=4, heads=False, videos=False, overlap=False)
    with pytest.raises(ValueError, match="layers differ.*--overwrite"):
        run_attention("tiny_vla", f"droid:{droid}", out, other, progress=False)
    done = run_attention("tiny_vla", f"droid:{droid}", out, FAST, progress=False)
    assert calls == [0, 1, 0, 1] and len(done) == 2  # episode 0 read back from done.json, 1 computed
    replaced = run_attention("tiny_vla", f"droid:{droid}", out, other, progress=False, overwrite=True)
    assert [d["layers"] for d in replaced] == [[2], [2]]
    assert json.loads((out / "run.json").read_text())["layers"] == [2]
