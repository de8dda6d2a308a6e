"""``policylens align extract / ingest / verify`` on a tiny simulated DROID episode (56 px)."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policylens.align import AlignDataset, build_encoder, grid_of
from policylens.cli.main import app
from policylens.data import open_episodes
from policylens.data.pointcloud import PointCloud, write_ply
from policylens.sim.pybullet import generate_episodes
from policylens.store import open_store
from policylens.store._layout import marker

runner = CliRunner()
CAM = "varied_camera_1"


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    generate_episodes("reach", 1, root, fmt="droid", image_size=56, progress=False)
    return root


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_extract_ingest_verify_and_resume(droid, tmp_path):
    spec, out = f"droid:{droid}", tmp_path / "feats"
    extract = ("align", "extract", "--episodes", spec, "--encoder", "dinov2", "--encoder", "siglip")
    res = run(*extract, "--camera", CAM, "--out", out, "--dtype", "float32")
    assert res.exit_code == 0, res.output
    assert "frames of grid [4, 4]" in res.output
    eps = open_episodes(spec)
    enc, _ = build_encoder("dinov2")
    frames = np.stack([eps[0].frame(CAM, t) for t in range(len(eps[0]))])
    torch.testing.assert_close(grid_of(open_store(out / "dinov2"))[:, 0], enc.features(enc.preprocess(frames)[0]))
    res = run("align", "ingest", "--episodes", spec, "--camera", CAM, "--out", tmp_path / "points", "--points", 128)
    assert res.exit_code == 0, res.output
    res = run("align", "verify", out)
    assert res.exit_code == 0, res.output
    assert "dinov2" in res.output and "siglip" in res.output and "adjacent cos" in res.output
    assert run("align", "verify", tmp_path / "points").exit_code == 0
    ds = AlignDataset(tmp_path / "points", [out / "dinov2", out / "siglip"])
    assert len(ds) == len(eps[0]) and ds[0]["patch_index"]["siglip"].shape == (1, 128)
    marker(out / "siglip", 0).unlink()  # killed mid-run: verify fails, the same command resumes
    res = run("align", "verify", out)
    assert res.exit_code == 1 and "incomplete" in res.output
    assert run(*extract, "--camera", CAM, "--out", out, "--dtype", "float32").exit_code == 0
    assert run("align", "verify", out).exit_code == 0


def test_ingest_ply_and_errors(droid, tmp_path):
    pc = PointCloud(np.random.default_rng(0).normal(size=(9, 3)), np.zeros((9, 3)), np.ones((9, 2)), np.zeros(9))
    write_ply(tmp_path / "c/ep0/0000.ply", pc, binary=False)
    res = run("align", "ingest", "--ply", str(tmp_path / "c/ep{episode}/{step:04d}.ply"), "--out", tmp_path / "p",
              "--points", 16, "--frame-size", "56x56")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert open_store(tmp_path / "p")[0]["valid"].sum() == 9
    res = run("align", "ingest", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "exactly one of --episodes" in res.output
    res = run("align", "extract", "--episodes", f"droid:{droid}", "--encoder", "dinov2", "--camera", "nope",
              "--out", tmp_path / "f")  # fmt: skip
    assert res.exit_code == 2 and "--camera 'nope'" in res.output and CAM in res.output
    res = run(
        "align",
        "extract",
        "--episodes",
        f"droid:{droid}",
        "--encoder",
        "vit9",
        "--camera",
        CAM,
        "--out",
        tmp_path / "f",
    )
    assert res.exit_code == 2 and "registered" in res.output
    res = run("align", "verify", tmp_path / "empty")
    assert res.exit_code == 2 and "no manifest.json" in res.output


@pytest.fixture(scope="module")
def two_episodes(tmp_path_factory):
    """Stores of two 56 px episodes (one held out), made with the commands."""
    root = tmp_path_factory.mktemp("align_two")
    generate_episodes("reach", 2, root / "droid", fmt="droid", image_size=56, progress=False)
    spec = f"droid:{root / 'droid'}"
    extract = ("align", "extract", "--episodes", spec, "--encoder", "dinov2", "--encoder", "siglip", "--camera", CAM)
    assert run(*extract, "--out", root / "feats", "--dtype", "float32").exit_code == 0
    ingest = ("align", "ingest", "--episodes", spec, "--camera", CAM, "--points", 64, "--stride", 2)
    assert run(*ingest, "--out", root / "points").exit_code == 0
    return root


def test_train_and_distill_commands(two_episodes, tmp_path):
    root, out = two_episodes, tmp_path / "aligned"
    feats = ("--features", root / "feats/dinov2", "--features", root / "feats/siglip")
    args = ("align", "train", "--points", root / "points", *feats, "--steps", 3, "--dim", 16, "--batch-size", 4,
            "--held-out", 0.5)  # fmt: skip
    res = run(*args, "--out", out)
    assert res.exit_code == 0, res.output
    assert f"TensorBoard logs in {out}" in res.output and str(out / "eval.json") in res.output
    assert "aligned infonce: within-frame" in res.output and "ridge 2d->3d" in res.output
    assert (out / "similarity_hist.png").is_file() and (out / "train_state.safetensors").is_file()
    res = run(*args, "--out", out, "--objective", "spatial_forcing")
    assert res.exit_code == 2 and "config.objective" in res.output and "--overwrite" in res.output
    res = run(*args, "--out", tmp_path / "x", "--objective", "clip")
    assert res.exit_code == 2 and "infonce" in res.output
    student = tmp_path / "student"
    res = run("align", "distill", "--aligned", out, "--features", root / "feats/dinov2", "--out", student,
              "--steps", 3, "--hidden", 16, "--batch-size", 4)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"TensorBoard logs in {student}" in res.output and "held-out loss" in res.output
    assert (student / "eval.json").is_file() and (student / "model.safetensors").is_file()
    res = run("align", "distill", "--aligned", tmp_path / "none", "--features", root / "feats/dinov2", "--out", student)
    assert res.exit_code == 2 and "align train" in res.output


def test_swapped_stores_are_named_in_one_line(two_episodes, tmp_path):
    root, out = two_episodes, tmp_path / "aligned"
    feats, points = root / "feats/dinov2", root / "points"
    res = run("align", "train", "--points", feats, "--features", points, "--out", out, "--threads", 1)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert f"--points {feats} is an `align extract` feature store and --features {points} is an `align ingest` " \
        f"point store: swapped; pass --points {points} --features {feats}" in res.stderr  # fmt: skip
    res = run("align", "train", "--points", feats, "--features", feats, "--out", out)
    assert res.exit_code == 2 and f"--points {feats} is an `align extract` feature store; pass" in res.stderr
    res = run("align", "distill", "--aligned", out, "--features", points, "--out", tmp_path / "student")
    assert res.exit_code == 2 and f"--features {points} is an `align ingest` point store" in res.stderr
    assert "--points" not in res.stderr
    assert not out.exists() and not (tmp_path / "student").exists()


def test_extract_dtype_choices_threads_and_ctrl_c(droid, tmp_path, monkeypatch):
    import policylens.align

    base = ("align", "extract", "--episodes", droid, "--encoder", "dinov2", "--camera", CAM, "--out", tmp_path / "f")
    res = runner.invoke(app, [str(a) for a in (*base, "--dtype", "float64")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "'float64' is not one of 'float16', 'bfloat16', 'float32'" in res.output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(policylens.align, "extract_features", interrupted)
    res = run(*base, "--threads", 1)
    assert res.exit_code == 130 and "torch threads: 1" in res.stdout
    assert f"interrupted: the finished chunks are kept in {tmp_path / 'f' / 'dinov2'}; rerun the same" in res.stderr
