"""`policylens sim generate` into an existing --out: refused, --overwrite clears, --append adds (DROID)."""

import json

from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.data.lerobot import open_dataset
from policylens.data.sim import layout_seed

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
    assert result.exit_code == 2 and "already holds a droid dataset; pass --overwrite" in result.stderr
    assert _snapshot(out) == before

    result = _generate(out, "--append", "--seed", "0")
    assert result.exit_code == 0, result.output
    episodes = _episodes(out)
    assert list(episodes) == ["2026-01-01-00h-00m-00s", "2026-01-01-00h-01m-00s", "2026-01-01-00h-02m-00s"]
    assert [e["seed"] for e in episodes.values()] == [layout_seed(0, i) for i in range(3)]  # a new layout
    assert all(_snapshot(out)[k] == v for k, v in before.items())  # the first two untouched

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
