"""The process group every long command joins: from torchrun's environment (2 and 3 CPU ranks
through gloo), a no-op in one process, shards that partition the items, and a failing rank that
ends the run with its rank named instead of a hang."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from policylens.runs import distributed, env_world, shard

WORKER = Path(__file__).with_name("_dist_worker.py")


def _torchrun(n: int, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", str(WORKER)]
    env = {"OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "60"}
    return subprocess.run([*cmd, str(out), *extra], capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, **env}, check=False)  # fmt: skip


@pytest.mark.parametrize("world", [2, 3])
def test_torchrun_ranks_join_one_gloo_group(tmp_path, world):
    run = _torchrun(world, tmp_path / "out.json")
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["world"] == world and got["backend"] == "gloo" and got["token"] == "from rank 0"
    assert [s["rank"] for s in got["seen"]] == list(range(world))
    assert [i for s in got["seen"] for i in s["shard"]] == list(range(7))  # disjoint, in order, complete


def test_a_failing_rank_ends_the_run_and_is_named(tmp_path):
    run = _torchrun(2, tmp_path / "out.json", "fail")
    assert run.returncode != 0 and not (tmp_path / "out.json").exists()
    assert "policylens: rank 1 of 2 stopped: RuntimeError: rank 1 failed on purpose" in run.stderr


def test_one_process_is_a_no_op(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with distributed(device="cpu") as d:
        assert (d.rank, d.world, d.main, d.active) == (0, 1, True, False)
        assert d.broadcast(3) == 3 and d.all_gather("x") == ["x"]


def test_shards_partition_and_bad_environments_are_refused(monkeypatch):
    for n in (0, 1, 5, 7):
        for world in (1, 2, 3, 4):
            parts = [shard(list(range(n)), r, world) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2; expected 0 <= RANK < WORLD_SIZE"):
        env_world()
