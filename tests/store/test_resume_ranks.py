"""Resume after a real SIGKILL, and two concurrent writer processes (RANK / WORLD_SIZE)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _store_fixtures import TinyModel, TinySource, build, extractor, meta_for

from policylens.store import build_store, open_store, read_manifest, verify_store

SCRIPT = str(Path(__file__).with_name("_store_fixtures.py"))


def _files(root: Path) -> dict[str, bytes]:
    """Every data file and marker of a store (the manifest aside), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def _spawn(root, env_extra=None, delay=0.0):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, SCRIPT, str(root), "hidden_state", "bfloat16", str(delay)], env=env)


def test_resume_after_sigkill_is_identical_and_skips_done_chunks(tmp_path):
    ref, part = tmp_path / "ref", tmp_path / "part"
    build(ref, "hidden_state", "bfloat16", store_inputs=["pixel_values"])
    proc = _spawn(part, delay=0.15)  # 8 batches of <= 5 samples, 5 chunks of 8
    deadline = time.monotonic() + 60
    while len(list((part / "done").glob("chunk-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (part / "done").glob("chunk-*"))
    assert 2 <= len(done_before) < 5, "the kill must land mid-build"
    assert read_manifest(part)["complete"] == []
    assert not verify_store(part).ok

    stale = part / "data" / "teacher_hidden" / "c" / "4" / "0" / "0" / ".0.999999999.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"torn")  # what a writer killed mid-file leaves behind (pid long gone)
    seen = []
    run = extractor(TinyModel(), "hidden_state")

    def counting(batch):
        seen.extend(batch["i"] if "i" in batch else [None] * len(batch["pixel_values"]))
        return run(batch)

    class Indexed(TinySource):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "i": i}

    build_store(
        part,
        Indexed(),
        counting,
        meta_for("hidden_state", "bfloat16", TinyModel()),
        batch_size=5,
        chunk_rows=8,
        store_inputs=["pixel_values"],
        progress=False,
    )
    finished = {int(n[6:]) for n in done_before}
    recomputed = {int(i) // 8 for i in seen}
    assert not recomputed & finished
    assert recomputed == set(range(5)) - finished
    assert _files(part) == _files(ref)
    assert read_manifest(part)["complete"] == [[0, 37]]
    assert verify_store(part).ok


def test_two_concurrent_ranks_write_disjoint_ranges(tmp_path):
    ref, shared = tmp_path / "ref", tmp_path / "shared"
    build(ref, "hidden_state", "bfloat16", store_inputs=["pixel_values"])
    procs = [_spawn(shared, {"RANK": str(r), "WORLD_SIZE": "2"}) for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert _files(shared) == _files(ref)
    assert read_manifest(shared)["complete"] == [[0, 37]]
    ds = open_store(shared)
    assert ds[list(range(37))]["sample_index"].tolist() == list(range(37))
    assert verify_store(shared).ok


def test_rank_argument_writes_only_its_block(tmp_path):
    m = build(tmp_path / "s", "hidden_feature", rank=1, world_size=2)
    assert m["complete"] == []
    done = sorted(int(p.name[6:]) for p in (tmp_path / "s" / "done").glob("chunk-*"))
    assert done == [2, 3, 4]  # 5 chunks: rank 0 gets [0, 1], rank 1 gets [2, 3, 4]
    m = build(tmp_path / "s", "hidden_feature", rank=0, world_size=2)
    assert m["complete"] == [[0, 37]]
