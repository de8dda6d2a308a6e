"""`policylens sim generate` into an existing --out: refused, --overwrite clears, --append adds (DROID);
an interrupted run says what it kept and the same command finishes it, equal to an uninterrupted run."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.data.lerobot import open_dataset
from policylens.sim.pybullet import layout_seed

runner = CliRunner()


def _generate(out, *extra):
    args = ["sim", "generate", "--out", str(out), "--episodes", "1", "--image-size", "32", *extra]
    return runner.invoke(app, args)


def _episodes(root) -> dict[str, dict]:
    """metadata.json of every DROID episode folder, by folder name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/*/*/metadata.json"))}


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_droid_refuse_append_overwrite(tmp_path):
    out = tmp_path / "droid"
    assert _generate(out, "--episodes", "2").exit_code == 0
    before = _snapshot(out)
    result = _generate(out)
    assert result.exit_code == 2 and "already holds a droid dataset of 2 episodes" in result.stderr
    assert _snapshot(out) == before

    result = _generate(out, "--append", "--seed", "0")
    assert result.exit_code == 0, result.output
    episodes = _episodes(out)
    assert list(episodes) == ["2026-01-01-00h-00m-00s", "2026-01-01-00h-01m-00s", "2026-01-01-00h-02m-00s"]
    assert [e["seed"] for e in episodes.values()] == [layout_seed(0, i) for i in range(3)]  # a new layout
    after = _snapshot(out)
    assert all(after[k] == v for k, v in before.items() if k != "generate.json")  # the first two untouched

    result = _generate(out, "--overwrite", "--seed", "3")
    assert result.exit_code == 0, result.output
    episodes = _episodes(out)
    assert list(episodes) == ["2026-01-01-00h-00m-00s"] and episodes["2026-01-01-00h-00m-00s"]["seed"] == layout_seed(
        3, 0
    )
    folder = next(out.glob("*/*/2026-01-01-00h-00m-00s"))
    for cam in episodes["2026-01-01-00h-00m-00s"]["cameras"]:
        frames = sorted((folder / "recordings" / "frames" / cam).glob("*.jpg"))
        assert len(frames) == episodes["2026-01-01-00h-00m-00s"]["trajectory_length"]  # no frames left behind

    result = _generate(out, "--overwrite", "--append")
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def test_lerobot_refuses_append_and_overwrite_replaces(tmp_path):
    out = tmp_path / "lerobot"
    assert _generate(out, "--format", "lerobot", "--episodes", "2").exit_code == 0
    result = _generate(out, "--format", "lerobot")
    assert result.exit_code == 2 and "already holds a lerobot dataset" in result.stderr
    result = _generate(out, "--format", "lerobot", "--append")
    assert result.exit_code == 2 and "appending to a LeRobot dataset is not supported" in result.stderr
    result = _generate(out, "--format", "droid", "--append")
    assert result.exit_code == 2 and "not supported" in result.stderr
    assert len(open_dataset(out)) == 2
    result = _generate(out, "--format", "lerobot", "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(open_dataset(out)) == 1


def test_overwrite_never_deletes_what_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = _generate(tmp_path, "--overwrite")
    assert result.exit_code == 2 and "not a dataset that generate_episodes wrote" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _generate(empty).exit_code == 0  # an empty directory is fine


def _arrays(root) -> dict[str, dict]:
    """Every trajectory.h5 array of a DROID dataset, by episode folder and array name."""
    import h5py

    out = {}
    for path in sorted(root.glob("*/*/*/trajectory.h5")):
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, obj, p=path: (
                    out.__setitem__((p.parent.name, name), obj[()]) if hasattr(obj, "shape") else None
                )
            )
    return out


def _interrupt_at(monkeypatch, call: int, partial: bool = True) -> None:
    """Ctrl-C during the ``call``-th DROID episode write (after part of its folder is on disk)."""
    from policylens.data import droid

    real, calls = droid.write_droid_episode, []

    def write(root, rec, index, *args, **kwargs):
        calls.append(index)
        if len(calls) == call:
            if partial:
                real(root, {**rec, "images": {}}, index)  # a half-written folder, no frames
            raise KeyboardInterrupt
        return real(root, rec, index, *args, **kwargs)

    monkeypatch.setattr(droid, "write_droid_episode", write)  # the generators write through data.droid


def test_interrupted_generate_is_finished_by_the_same_command(tmp_path, monkeypatch):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _generate(whole, "--episodes", "3").exit_code == 0
    _interrupt_at(monkeypatch, 3)
    result = _generate(cut, "--episodes", "3")
    assert result.exit_code == 130, result.output
    assert f"interrupted: 2 of 3 episodes done in {cut}; rerun the same command to write the others" in result.stderr
    assert len(_episodes(cut)) == 2  # the half-written third is gone
    monkeypatch.undo()
    result = _generate(cut, "--episodes", "1", "--seed", "1")
    assert result.exit_code == 2 and "other settings (seed=0 (now 1))" in result.stderr
    result = _generate(cut, "--episodes", "3")
    assert result.exit_code == 0, result.output
    assert "wrote 1 more of 3 reach episodes" in result.stdout
    a, b = _arrays(whole), _arrays(cut)
    assert len(a) > 3 * 5 and a.keys() == b.keys()
    for key, value in a.items():
        np.testing.assert_array_equal(b[key], value, err_msg=str(key))
    assert _episodes(cut) == _episodes(whole)
    result = _generate(cut, "--episodes", "3")
    assert result.exit_code == 0 and "wrote 0 more of 3" in result.stdout


def test_a_run_that_finished_nothing_does_not_block_other_settings(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _interrupt_at(monkeypatch, 1)
    result = _generate(out, "--episodes", "2")
    assert result.exit_code == 130 and "0 of 2 episodes done" in result.stderr
    monkeypatch.undo()
    result = _generate(out, "--episodes", "1", "--seed", "4", "--threads", "1")
    assert result.exit_code == 0 and "torch threads: 1" in result.stdout, result.output
    assert [e["seed"] for e in _episodes(out).values()] == [layout_seed(4, 0)]


def test_policy_rollouts_and_lerobot_are_not_resumed_half_way(tmp_path, monkeypatch):
    from policylens.sim.pybullet import ExpertPolicy, GenerationInterrupted, generate_episodes

    _interrupt_at(monkeypatch, 2, partial=False)
    kw = {"image_size": 32, "progress": False, "policy": ExpertPolicy()}
    with pytest.raises(GenerationInterrupted, match="1 of 2 episodes done .* rerun with --overwrite"):
        generate_episodes("reach", 2, tmp_path / "rollouts", **kw)
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="1 of 2 rollouts of a policy; they do not resume"):
        generate_episodes("reach", 2, tmp_path / "rollouts", **kw)
    assert len(generate_episodes("reach", 2, tmp_path / "rollouts", if_exists="overwrite", **kw)) == 2

    from policylens.data.lerobot import _writer

    monkeypatch.setattr(_writer.LeRobotWriter, "finalize", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    result = _generate(tmp_path / "lr", "--format", "lerobot", "--episodes", "2")
    assert result.exit_code == 130 and "a LeRobot dataset is written at the end" in result.stderr
    monkeypatch.undo()
    result = _generate(tmp_path / "lr", "--format", "lerobot", "--episodes", "2")
    assert result.exit_code == 0, result.output
    assert len(open_dataset(tmp_path / "lr")) == 2
