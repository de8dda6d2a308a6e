"""``cache build`` as torchrun ranks and as an interrupted run: each rank says which samples it
computed; Ctrl-C keeps what was computed, says so in one line, exits 130, and the same command
finishes the store as an uninterrupted run would have written it."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from policylens.anchors import SyntheticSource
from policylens.cli._cache import app
from policylens.store import open_store, verify_store

runner = CliRunner()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _build(out, n, *extra):
    return runner.invoke(app, ["build", "--dataset", f"synthetic:{n}", "--batch-size", "1", *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "s"
    res = _build(out, 20, "--threads", "1")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "torch threads: 1"  # said once, first
    assert res.output.count("torch threads") == 1
    return out


def test_ctrl_c_keeps_the_samples_and_the_same_command_finishes(tmp_path, reference, monkeypatch):
    out = tmp_path / "s"
    plain = SyntheticSource.__getitem__

    def stop_at_5(self, i):
        if i == 5:
            raise KeyboardInterrupt  # what Ctrl-C does while sample 5 is being made
        return plain(self, i)

    monkeypatch.setattr(SyntheticSource, "__getitem__", stop_at_5)
    res = _build(out, 20)  # chunks of 2 samples: 0-1, 2-3 finished, 4 kept of chunk 2
    assert res.exit_code == 130
    line = f"interrupted: kept 5 of 20 samples in {out}; rerun the same command to resume"
    assert res.stdout.splitlines()[-1] == line
    ds = open_store(out, allow_incomplete=True)
    want = open_store(reference)
    assert ds[[0, 4]]["target_features"].equal(want[[0, 4]]["target_features"])

    monkeypatch.setattr(SyntheticSource, "__getitem__", plain)
    res = _build(out, 20)
    assert res.exit_code == 0, res.output
    assert "complete [[0, 20]]" in res.output
    assert _files(out) == _files(reference)
    assert verify_store(out).ok


def test_each_torchrun_rank_computes_and_names_its_share(tmp_path, monkeypatch):
    out, single = tmp_path / "s", tmp_path / "single"
    assert _build(single, 8).exit_code == 0
    lines = {}
    for rank in (1, 0):  # rank 1 creates the store, rank 0 finishes it
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        res = _build(out, 8)
        assert res.exit_code == 0, res.output
        lines[rank] = res.stdout.splitlines()[-1]
    assert (
        lines[1]
        == f"{out}: hidden_feature, 8 samples, complete not yet (other ranks); rank 1/2 computed samples [[4, 8]]"
    )
    assert lines[0] == f"{out}: hidden_feature, 8 samples, complete [[0, 8]]; rank 0/2 computed samples [[0, 4]]"
    assert _files(out) == _files(single)
