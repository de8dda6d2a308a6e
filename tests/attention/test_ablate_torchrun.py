"""``attention ablate`` as 2 and 3 torchrun ranks (gloo on CPU) writes what one process writes: the
same files, byte for byte, with the open-loop episodes and the closed-loop conditions split over the
ranks; a rerun under torchrun after parts were lost redoes only those and ends equal again."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.runs import save_checkpoint

POLICYLENS = Path(sys.executable).with_name("policylens")
CONDITIONS = "hand_camera:black,instruction:shuffled"


def torchrun(n: int, *args: str) -> subprocess.CompletedProcess:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "--no-python"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "120", "COLUMNS": "200"}
    return subprocess.run([*run, str(POLICYLENS), *args], capture_output=True, text=True, timeout=300, env=env)


def tree(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` by its relative path (JSON with ``out``'s own path replaced)."""
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            files[str(p.relative_to(out))] = data.replace(str(out).encode(), b"OUT") if p.suffix == ".json" else data
    return files


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("ablate_ranks")
    torch.manual_seed(0)
    vla = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, layers=2, flow_steps=2, chunk_size=4)).eval()
    ckpt = save_checkpoint(vla, root / "vla")
    generate_episodes("reach", 3, root / "eps", seed=0, fmt="droid", image_size=28, progress=False)
    args = ["--episodes", str(root / "eps"), "--policy", str(ckpt), "--conditions", CONDITIONS, "--layers", "0,1",
            "--every", "4", "--sim-episodes", "1", "--batch", "1", "--n-boot", "20", "--threads", "1"]  # fmt: skip
    one = CliRunner().invoke(app, ["attention", "ablate", "--out", str(root / "one"), *args])
    assert one.exit_code == 0, one.output
    return root, args


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_write_what_one_process_writes(setup, tmp_path, world):
    root, args = setup
    out = tmp_path / "out"
    run = torchrun(world, "attention", "ablate", "--out", str(out), *args)
    assert run.returncode == 0, run.stderr[-3000:]
    one, many = tree(root / "one"), tree(out)
    assert sorted(many) == sorted(one)
    assert [k for k in one if many[k] != one[k]] == []
    assert len([k for k in one if k.startswith("ablation/episodes/")]) == 3
    assert len([k for k in one if k.startswith("ablation/closed_loop/")]) == 3  # unablated + 2 conditions
    assert run.stdout.count(str(out / "ablation.png")) == 1  # rank 0's summary; the others one line each
    assert f"rank {world - 1}/{world}: its parts written; rank 0 wrote {out / 'ablation.json'}" in run.stdout


def test_a_rerun_under_torchrun_redoes_only_the_lost_parts(setup, tmp_path):
    root, args = setup
    out = tmp_path / "out"
    assert torchrun(2, "attention", "ablate", "--out", str(out), *args).returncode == 0
    lost = [out / "ablation" / "episodes" / "000002.json", out / "ablation" / "closed_loop" / "none.json"]
    kept = out / "ablation" / "episodes" / "000000.json"
    for p in lost:
        p.unlink()
    (out / "ablation.json").unlink()
    stamp = kept.stat().st_mtime_ns
    run = torchrun(3, "attention", "ablate", "--out", str(out), *args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert kept.stat().st_mtime_ns == stamp and all(p.is_file() for p in lost)
    one, again = tree(root / "one"), tree(out)
    assert [k for k in one if again.get(k) != one[k]] == []
