"""MetaWorld ``generate_episodes`` resumes like the pybullet one: an interrupted call keeps its
finished episodes and the same call writes only the missing ones (MetaWorld faked: the resume
logic, not the simulator, is under test; it runs without the extra)."""

import contextlib

import numpy as np
import pytest

from policylens.sim.metaworld import _export
from policylens.sim.pybullet import GenerationInterrupted


def fake_record(env, seed, action_noise=0.0):
    """A deterministic 5-step recording of layout ``seed``, shaped like ``record_episode``'s."""
    rng = np.random.default_rng(seed)
    T = 5
    return {
        "actions": rng.uniform(-1, 1, (T, 4)).astype(np.float32),
        "state": rng.normal(size=(T, 39)).astype(np.float32),
        "proprio": rng.uniform(0, 1, (T, 4)).astype(np.float32),
        "hand_targets": rng.normal(size=(T, 3)).astype(np.float32),
        "timestamps": np.arange(T) / 80.0,
        "intrinsics": {},
        "extrinsics": {},
        "instruction": "reach",
        "success": True,
        "task": "reach-v3",
        "seed": int(seed),
        "fps": 80,
        "image_size": 0,
        "scene": {"suite": "metaworld", "task": "reach-v3"},
    }


@pytest.fixture
def fake_metaworld(monkeypatch):
    monkeypatch.setattr(_export, "MetaWorldEnv", lambda *a, **k: contextlib.nullcontext(None))

    def record(env, seed, action_noise=0.0):
        record.calls += 1
        if record.calls == record.interrupt_at:
            raise KeyboardInterrupt
        return fake_record(env, seed, action_noise)

    record.calls, record.interrupt_at = 0, None

    monkeypatch.setattr(_export, "record_episode", record)
    return record


def _trajectories(root):
    import h5py

    out = {}
    for path in sorted(root.glob("*/*/*/trajectory.h5")):
        with h5py.File(path, "r") as f:
            out[path.parent.name] = np.asarray(f["action/cartesian_position"])
    return out


def test_interrupted_metaworld_generate_resumes(tmp_path, fake_metaworld):
    whole = _export.generate_episodes("reach-v3", 3, tmp_path / "whole", fmt="droid", progress=False)
    fake_metaworld.calls, fake_metaworld.interrupt_at = 0, 3  # Ctrl-C while recording the third
    with pytest.raises(GenerationInterrupted, match="2 of 3 episodes done"):
        _export.generate_episodes("reach-v3", 3, tmp_path / "cut", fmt="droid", progress=False)
    fake_metaworld.interrupt_at = None
    with pytest.raises(FileExistsError, match=r"other settings \(seed=0 \(now 1\)\)"):
        _export.generate_episodes("reach-v3", 3, tmp_path / "cut", fmt="droid", seed=1, progress=False)
    cut = _export.generate_episodes("reach-v3", 3, tmp_path / "cut", fmt="droid", progress=False)
    assert [p.name for p in cut] == [p.name for p in whole]
    a, b = _trajectories(tmp_path / "whole"), _trajectories(tmp_path / "cut")
    assert len(a) == 3 and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
