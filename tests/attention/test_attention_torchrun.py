"""``attention run`` as 2 and 3 torchrun ranks (gloo on CPU) over 3 DROID episodes writes what one
process writes: the same files, byte for byte (images, zarr chunks, JSON with OUT's path swapped;
videos frame for frame); rank 0's refusal of OUT ends every rank; ``--workers`` is refused under torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.runs import shard

POLICYLENS = Path(sys.executable).with_name("policylens")
OPTIONS = ["--every", "4", "--no-heads", "--layers", "1,2", "--threads", "1"]


def torchrun(n: int, *args: str) -> subprocess.CompletedProcess:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "--no-python"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "120", "COLUMNS": "200"}
    return subprocess.run([*run, str(POLICYLENS), *args], capture_output=True, text=True, timeout=300, env=env)


def decoded(video: Path) -> bytes:
    """A video's decoded frames (its container holds a random segment id, so its bytes differ run to run)."""
    import av

    with av.open(str(video)) as container:
        return b"".join(f.to_ndarray(format="rgb24").tobytes() for f in container.decode(video=0))


def tree(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` by its relative path: its bytes (JSON with ``out``'s own path replaced;
    videos decoded)."""
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            data = decoded(p) if p.suffix in (".webm", ".mp4") else p.read_bytes()
            files[str(p.relative_to(out))] = data.replace(str(out).encode(), b"OUT") if p.suffix == ".json" else data
    return files


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("attn_ranks")
    generate_episodes("reach", 3, root / "eps", seed=0, fmt="droid", image_size=56, progress=False)
    one = CliRunner().invoke(
        app, ["attention", "run", "--episodes", str(root / "eps"), "--out", str(root / "one"), *OPTIONS]
    )
    assert one.exit_code == 0, one.output
    return root


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_write_what_one_process_writes(droid, tmp_path, world):
    out = tmp_path / "out"
    run = torchrun(world, "attention", "run", "--episodes", str(droid / "eps"), "--out", str(out), *OPTIONS)
    assert run.returncode == 0, run.stderr[-3000:]
    one, many = tree(droid / "one"), tree(out)
    assert sorted(many) == sorted(one)
    assert [k for k in one if many[k] != one[k]] == []
    assert {"overlap.json", "run.json"} <= set(one) and any(k.endswith(".webm") for k in one)
    assert run.stdout.count(f"3 episodes, 7 keyframes -> {out}") == 1  # rank 0's summary; the others one line each
    last = len(shard(range(3), world - 1, world))
    assert f"rank {world - 1}/{world}: {last} of 3 episodes; rank 0 wrote the summaries in {out}" in run.stdout


def test_rank_zeros_refusal_of_out_ends_every_rank(droid):
    args = ["attention", "run", "--episodes", str(droid / "eps"), "--out", str(droid / "one"), *OPTIONS]
    run = torchrun(2, *args, "--layers", "1")
    assert run.returncode != 0
    assert "policylens: rank 1 of 2 stopped: RunDirError" in run.stderr and "layers differ" in run.stderr


def test_workers_are_refused_under_torchrun(droid, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = ["attention", "run", "--episodes", str(droid / "eps"), "--out", str(tmp_path / "out"), "--workers", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert "--workers 2 under torchrun (2 ranks): the ranks already split the episodes" in result.stderr
