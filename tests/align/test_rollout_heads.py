"""``rollout_heads``: every head's checkpoint is read before the first rollout, each head is rolled out
with the given settings, its source comes from its config, and ``rollout_seed{seed}.json`` holds its
result with the Wilson interval (checked against the formula in float64). The closed loop itself is
``evaluate_action_head``'s (tests/align/test_stage2.py); here it is replaced by fixed outcomes."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from policylens.align import _stage2, rollout_heads
from policylens.align._stage2 import HEAD_FORMAT
from policylens.sim.pybullet import EvalResult

OUTCOMES = {"rgb": (3, 4), "raw": (0, 4), "student": (4, 4)}  # source -> (successes, n)


def _head(path, source, fmt=HEAD_FORMAT):
    path.mkdir(parents=True)
    config = {"format": fmt, "aligned": "a", "student": None, "config": {"source": source, "task": "reach"}}
    (path / "config.json").write_text(json.dumps(config))
    save_file({"w": torch.zeros(1)}, str(path / "model.safetensors"))
    return path


def _wilson(k, n, z=1.959964):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.fixture
def rolled(monkeypatch):
    """Replace the closed loop: each head succeeds as ``OUTCOMES`` says for its source; calls are kept."""
    calls = []

    def evaluate(path, episodes=50, seed=0, progress=True, device="cpu"):
        calls.append({"path": str(path), "episodes": episodes, "seed": seed, "progress": progress, "device": device})
        config = json.loads((Path(path) / "config.json").read_text())
        k, n = OUTCOMES[config["config"]["source"]]
        return EvalResult(successes=k, n=n, episode_success=[True] * k + [False] * (n - k))

    monkeypatch.setattr(_stage2, "evaluate_action_head", evaluate)
    return calls


def test_one_row_per_head_in_order_and_the_results_written(tmp_path, rolled):
    heads = [_head(tmp_path / "h_raw", "raw"), _head(tmp_path / "h_rgb", "rgb"), _head(tmp_path / "h_st", "student")]
    rows = rollout_heads([str(h) for h in heads], episodes=4, seed=7, device="cpu", progress=False)
    assert [r["path"] for r in rows] == [str(h) for h in heads]
    assert [r["source"] for r in rows] == ["raw", "rgb", "student"]
    assert rolled == [{"path": str(h), "episodes": 4, "seed": 7, "progress": False, "device": "cpu"} for h in heads]
    for head, row in zip(heads, rows, strict=True):
        k, n = OUTCOMES[row["source"]]
        assert (row["result"].successes, row["result"].n) == (k, n)
        assert row["file"] == head / "rollout_seed7.json"
        written = json.loads(row["file"].read_text())
        assert written == row["written"]
        assert written["episodes"] == n and written["successes"] == k and written["seed"] == 7
        assert written["interval"] == pytest.approx(_wilson(k, n), abs=1e-12)
    assert not (heads[0] / "rollout_seed0.json").exists()


def test_another_seed_writes_another_file(tmp_path, rolled):
    head = _head(tmp_path / "h", "rgb")
    rollout_heads([head], episodes=4, seed=0)
    rollout_heads([head], episodes=4, seed=1)
    assert sorted(p.name for p in head.glob("rollout_seed*.json")) == ["rollout_seed0.json", "rollout_seed1.json"]


def test_every_head_is_read_before_the_first_rollout(tmp_path, rolled):
    good = _head(tmp_path / "good", "rgb")
    with pytest.raises(FileNotFoundError, match="align head"):
        rollout_heads([good, tmp_path / "missing"], episodes=4)
    other = _head(tmp_path / "other", "rgb", fmt="policylens-align-1")
    with pytest.raises(ValueError, match=f"expected {HEAD_FORMAT!r}"):
        rollout_heads([good, other], episodes=4)
    assert rolled == [] and not (good / "rollout_seed0.json").exists()


@pytest.mark.parametrize(("paths", "episodes", "match"), [([], 4, "paths is empty"), (None, 0, "episodes=0")])
def test_bad_settings_are_refused(tmp_path, rolled, paths, episodes, match):
    paths = [_head(tmp_path / "h", "rgb")] if paths is None else paths
    with pytest.raises(ValueError, match=match):
        rollout_heads(paths, episodes=episodes)
    assert rolled == []
