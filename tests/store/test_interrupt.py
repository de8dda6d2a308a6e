"""An interrupted build (Ctrl-C, SIGTERM) keeps every sample it computed, readable, and the rerun
finishes from there to the same bytes as a build that was never interrupted."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _store_fixtures import TinyModel, TinySource, build, extractor, flip, meta_for

from policylens.store import BuildInterrupted, StoreError, build_store, open_store, store_info, verify_store
from policylens.store._chunks import seal
from policylens.store._interrupt import signals_interrupt

SCRIPT = str(Path(__file__).with_name("_store_fixtures.py"))
N, BATCH, ROWS = 37, 5, 10  # chunks of two batches: [0, 10) [10, 20) [20, 30) [30, 37)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Stops:
    """An extractor that raises KeyboardInterrupt (what Ctrl-C does) when asked for sample ``at``,
    and records the samples it computed."""

    def __init__(self, at: int | None) -> None:
        self.at, self.seen, self.run = at, [], extractor(TinyModel(), "hidden_state")

    def __call__(self, batch):
        ids = batch.pop("i").tolist()
        if self.at is not None and self.at in ids:
            raise KeyboardInterrupt
        self.seen += ids
        return self.run(batch)


class Indexed(TinySource):
    def __getitem__(self, i):
        return {**super().__getitem__(i), "i": i}


def _build(root, at=None):
    stops = Stops(at)
    meta = meta_for("hidden_state", "bfloat16", TinyModel())
    kw = {"batch_size": BATCH, "chunk_rows": ROWS, "store_inputs": ["pixel_values"], "progress": False}
    build_store(root, Indexed(N), stops, meta, **kw)
    return stops.seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref") / "s"
    _build(root)
    return root


def test_interrupt_keeps_every_computed_sample_and_the_rerun_ends_identical(tmp_path, reference):
    root = tmp_path / "s"
    with pytest.raises(BuildInterrupted) as err:
        _build(root, at=25)  # in the second batch of chunk 2
    assert isinstance(err.value, KeyboardInterrupt)
    assert (err.value.kept, err.value.total, err.value.signum) == (25, N, signal.SIGINT)
    assert str(err.value) == f"SIGINT: kept 25 of 37 samples in {root}; rerun the same build to resume"
    assert sorted(p.name for p in (root / "done").iterdir()) == ["chunk-00000000", "chunk-00000001", "part-00000002"]
    assert (root / "done" / "part-00000002").read_text() == "5\n"

    ds = open_store(root, allow_incomplete=True, check=True)  # the kept samples read, checksums fine
    want = open_store(reference)
    for i in (0, 19, 20, 24):
        for k in ("teacher_hidden", "pixel_values", "sample_index"):
            assert torch.equal(ds[i][k], want[i][k]), (i, k)
    assert torch.equal(ds[[24, 3, 20]]["teacher_hidden"], want[[24, 3, 20]]["teacher_hidden"])
    for bad in (25, [20, 25], 30):
        with pytest.raises(StoreError, match=r"samples \[25, 30\]|samples \[30, 37\]"):
            ds[bad]
    with pytest.raises(StoreError, match=r"incomplete: samples \[\[25, 37\]\] have no done marker"):
        open_store(root)
    info = store_info(root)
    assert (info["complete"], info["missing"]) == ([[0, 25]], [[25, 37]])
    rep = verify_store(root)
    assert not rep.ok and rep.incomplete == [[25, 37]]

    seen = _build(root)  # the same call again
    assert seen == list(range(25, N))  # nothing kept was computed again
    assert _files(root) == _files(reference)  # data, markers and manifest
    assert verify_store(root).ok


def test_interrupts_in_a_row_and_a_damaged_partial_chunk(tmp_path, reference):
    root = tmp_path / "s"
    with pytest.raises(BuildInterrupted, match="kept 20 of 37"):
        _build(root, at=20)  # at a chunk boundary: no partial chunk
    assert not list((root / "done").glob("part-*"))
    with pytest.raises(BuildInterrupted, match="kept 25 of 37"):
        _build(root, at=25)
    with pytest.raises(BuildInterrupted, match="kept 35 of 37"):
        _build(root, at=35)  # chunk 3 partial; chunk 2 finished and its partial marker gone
    assert sorted(p.name for p in (root / "done").glob("part-*")) == ["part-00000003"]
    flip(root / "data" / "teacher_hidden" / "c" / "3" / "0" / "0" / "0")  # the kept rows cannot be trusted
    seen = _build(root)
    assert seen == list(range(30, N))  # chunk 3 computed from its start instead
    assert _files(root) == _files(reference)


def test_an_interrupt_before_the_store_exists_keeps_nothing(tmp_path):
    with pytest.raises(BuildInterrupted, match="kept 0 of 37") as err:
        _build(tmp_path / "s", at=0)  # in the first batch, which makes the store
    assert err.value.kept == 0
    _build(tmp_path / "s")
    assert verify_store(tmp_path / "s").ok


def test_sigterm_keeps_the_work_and_the_build_resumes(tmp_path):
    ref, part = tmp_path / "ref", tmp_path / "part"
    build(ref, "hidden_state", "bfloat16", store_inputs=["pixel_values"])  # chunks of 8, batches of 5
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, str(part), "hidden_state", "bfloat16", "0.15"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not list((part / "done").glob("chunk-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "BuildInterrupted: SIGTERM: kept" in err, err[-2000:]
    kept = int(err.split("SIGTERM: kept ")[1].split()[0])
    assert 8 <= kept < 37  # a chunk and more; not all
    assert store_info(part)["complete"] == [[0, kept]]
    build(part, "hidden_state", "bfloat16", store_inputs=["pixel_values"])
    assert _files(part) == _files(ref)


def test_signals_interrupt_turns_sigterm_into_keyboard_interrupt_and_leaves_custom_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with signals_interrupt() as caught, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as the call returns
    assert caught.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before

    calls = []
    signal.signal(signal.SIGTERM, lambda s, f: calls.append(s))
    try:
        with signals_interrupt() as caught:
            os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM] and caught.signum is None  # the program's own handler ran
    finally:
        signal.signal(signal.SIGTERM, before)


def test_rows_kept_without_a_sample_index_match_are_recomputed(tmp_path, reference):
    """A partial chunk whose sample ids are not the build's (another sample mapping) is not reused."""
    root = tmp_path / "s"
    with pytest.raises(BuildInterrupted, match="kept 25 of 37"):
        _build(root, at=25)
    path = root / "data" / "sample_index" / "c" / "2"
    ids = np.frombuffer(path.read_bytes()[:-4], "<i8").copy()
    ids[0] = 99
    path.write_bytes(seal(ids.astype("<i8").tobytes()))
    assert _build(root) == list(range(20, N))
    assert _files(root) == _files(reference)
