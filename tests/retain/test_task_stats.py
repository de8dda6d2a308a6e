"""Task data outside the teacher's normalisation: the z-scores against a float64 loop reference,
which dims take the task's statistics, and the teacher's function unchanged by the remedy."""

import math

import numpy as np
import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig, load_model
from policylens.retain._task_stats import (
    UNUSED_STD,
    Z_LIMIT,
    adopt_task_stats,
    check_task_stats,
    planned_task_stats,
    task_stats_message,
)


@pytest.fixture(scope="module")
def shipped():
    return load_model("tiny_vla")  # dims 3-6 of its actions at the floor std: never used on reach


def _teacher(shipped) -> TinyVLA:
    model = TinyVLA(shipped.config)
    model.load_state_dict(shipped.state_dict())
    return model.eval()


def _tray_episodes(n=3, t=20, seed=0):
    """put_in_tray-like data: xyz near the teacher's, the gripper (dim 6) opening and closing."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        state = np.zeros((t, 7), np.float32)
        state[:, :3] = [0.46, 0.0, 0.23] + 0.05 * rng.normal(size=(t, 3))
        state[:, 6] = rng.uniform(0, 0.04, t)
        action = np.zeros((t, 7), np.float32)
        action[:, :3] = [0.47, 0.0, 0.2] + 0.05 * rng.normal(size=(t, 3))
        action[:, 6] = rng.integers(0, 2, t)
        out.append({"state": state, "action": action})
    return out


def _quantile(values: list[float], q: float) -> float:
    """numpy's default (linear) quantile, by sorting and interpolating."""
    xs = sorted(values)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    return xs[lo] if lo + 1 >= len(xs) else xs[lo] + (h - lo) * (xs[lo + 1] - xs[lo])


def _reference(episodes, name, mean, std, q=0.99):
    """Per dim: the quantile of |x - mean| / std, the mean and the unbiased std (floored at 1e-3)."""
    rows = [[float(v) for v in row] for ep in episodes for row in ep[name]]
    out = []
    for d in range(len(mean)):
        col = [r[d] for r in rows]
        m = sum(col) / len(col)
        var = sum((v - m) ** 2 for v in col) / (len(col) - 1)
        z = _quantile([abs(v - float(mean[d])) / float(std[d]) for v in col], q)
        out.append((z, m, max(math.sqrt(var), 1e-3)))
    return out


def test_z_scores_far_and_unused_dims_match_the_reference(shipped):
    episodes = _tray_episodes()
    checks = check_task_stats(shipped, episodes)
    assert set(checks) == {"action", "state"}
    for name, check in checks.items():
        ref = _reference(episodes, name, getattr(shipped, f"{name}_mean"), getattr(shipped, f"{name}_std"))
        assert check.z == pytest.approx([r[0] for r in ref], rel=1e-9, abs=1e-9)
        assert check.mean == pytest.approx([r[1] for r in ref], rel=1e-9, abs=1e-12)
        assert check.std == pytest.approx([r[2] for r in ref], rel=1e-9)
        assert check.far == tuple(d for d, r in enumerate(ref) if r[0] > Z_LIMIT)
        std = getattr(shipped, f"{name}_std")
        assert check.unused == tuple(d for d in range(len(std)) if float(std[d]) <= UNUSED_STD)
    assert checks["action"].adopt == (6,) and checks["state"].adopt == (6,)
    assert checks["action"].z[6] == pytest.approx(1000, rel=1e-3)  # a gripper at 1 against std 0.001


def test_remedy_keeps_the_teacher_and_takes_the_task_statistics(shipped):
    episodes = _tray_episodes()
    teacher, tuned = _teacher(shipped), _teacher(shipped)
    checks = check_task_stats(teacher, episodes)
    planned = planned_task_stats(tuned, checks)
    assert adopt_task_stats(tuned, checks) == planned
    for name in ("action", "state"):
        ref = _reference(episodes, name, getattr(teacher, f"{name}_mean"), getattr(teacher, f"{name}_std"))
        mean, std = getattr(tuned, f"{name}_mean"), getattr(tuned, f"{name}_std")
        assert float(mean[6]) == pytest.approx(ref[6][1], rel=1e-6) and float(std[6]) == pytest.approx(
            ref[6][2], rel=1e-6
        )
        assert torch.equal(mean[:6], getattr(teacher, f"{name}_mean")[:6])
        assert torch.equal(std[:6], getattr(teacher, f"{name}_std")[:6])
        assert planned[name]["6"]["std"] == pytest.approx([1e-3, ref[6][2]], rel=1e-5)
    # the teacher's own inputs (gripper closed, rotations 0) and the task's, one noise draw
    g = torch.Generator().manual_seed(0)
    images = {
        c: torch.randint(0, 256, (4, 112, 112, 3), generator=g, dtype=torch.uint8) for c in teacher.config.cameras
    }
    own = torch.zeros(4, 7)
    own[:, :3] = torch.tensor([0.46, 0.0, 0.23]) + 0.05 * torch.randn(4, 3, generator=g)
    task = own.clone()
    task[:, 6] = torch.tensor([0.0, 0.01, 0.03, 0.04])
    noise = torch.randn(4, *teacher.noise_shape, generator=g)
    for state in (own, task):
        batch = teacher.make_batch(images, ["reach the red cube", "put the red cube in the tray"] * 2, state)
        before, after = teacher.sample_actions(batch, noise=noise), tuned.sample_actions(batch, noise=noise)
        assert torch.allclose(after[..., :6], before[..., :6], atol=1e-5, rtol=0)  # measured 7e-7
        assert not torch.allclose(after[..., 6], before[..., 6], atol=1e-2)  # only the remedied dim moves
        token = teacher.state_proj(teacher.normalize("state", batch["state"]))
        assert torch.allclose(tuned.state_proj(tuned.normalize("state", batch["state"])), token, atol=1e-4, rtol=1e-5)


def test_action_dims_alone_leave_the_other_outputs_bit_identical(shipped):
    episodes = _tray_episodes()
    for ep in episodes:
        ep["state"][:, 6] = 0.0  # states inside the teacher's statistics: only the action stream moves
    teacher, tuned = _teacher(shipped), _teacher(shipped)
    checks = check_task_stats(teacher, episodes)
    assert checks["state"].far == () and checks["action"].adopt == (6,)
    adopt_task_stats(tuned, checks)
    assert torch.equal(tuned.state_proj.weight, teacher.state_proj.weight)
    batch = teacher.example_batch(3, seed=1)
    noise = torch.randn(3, *teacher.noise_shape, generator=torch.Generator().manual_seed(1))
    before, after = teacher.sample_actions(batch, noise=noise), tuned.sample_actions(batch, noise=noise)
    assert torch.equal(after[..., :6], before[..., :6])
    mean, std = float(tuned.action_mean[6]), float(tuned.action_std[6])
    normalised = (before[..., 6] - float(teacher.action_mean[6])) / float(teacher.action_std[6])
    assert torch.allclose(after[..., 6], normalised * std + mean, atol=1e-5)


def test_action_loss_at_step_0_comes_to_a_normal_scale(shipped):
    episodes = _tray_episodes(n=1, t=16)
    teacher, tuned = _teacher(shipped), _teacher(shipped)
    adopt_task_stats(tuned, check_task_stats(teacher, episodes))
    g = torch.Generator().manual_seed(2)
    images = {
        c: torch.randint(0, 256, (16, 112, 112, 3), generator=g, dtype=torch.uint8) for c in teacher.config.cameras
    }
    ep = episodes[0]
    batch = teacher.make_batch(images, ["put the red cube in the tray"] * 16, torch.as_tensor(ep["state"]))
    chunk = np.minimum(np.arange(16)[:, None] + np.arange(teacher.config.chunk_size)[None], 15)
    batch["action"] = torch.as_tensor(ep["action"][chunk])  # (16, H, 7)
    losses = []
    for model in (teacher, tuned):
        torch.manual_seed(0)
        with torch.no_grad():
            losses.append(float(model.loss(batch, generator=torch.Generator().manual_seed(0))))
    assert losses[0] > 1e4 and losses[1] < 10, losses


def test_far_dims_the_teacher_uses_are_kept_and_the_message_says_so(shipped):
    episodes = _tray_episodes()
    for ep in episodes:
        ep["action"][:, 0] += 5.0  # x far outside: a dim the teacher uses
    teacher = _teacher(shipped)
    checks = check_task_stats(teacher, episodes)
    assert checks["action"].far == (0, 6) and checks["action"].kept == (0,) and checks["action"].adopt == (6,)
    changed = adopt_task_stats(teacher, checks)
    assert set(changed["action"]) == {"6"}
    assert float(teacher.action_mean[0]) == float(shipped.action_mean[0])
    line = task_stats_message(checks, changed)
    assert "\n" not in line and "action dim 0 at" in line and "action dim 0 the teacher uses" in line
    assert "action[6] mean 0→0.5" in line and "std 0.001→0.5" in line
    off = task_stats_message(checks, None)
    assert "kept the teacher's statistics" in off
    assert task_stats_message(check_task_stats(shipped, _reach_like()), {}) is None


def _reach_like():
    episodes = _tray_episodes()
    for ep in episodes:
        ep["state"][:, 6] = 0.0
        ep["action"][:, 6] = 0.0
    return episodes


def test_a_policy_that_ignores_its_state_checks_actions_only_and_bad_shapes_are_named():
    model = TinyVLA(TinyVLAConfig(use_state=False))
    with torch.no_grad():
        model.state_std.fill_(1e-3)
        model.action_std.fill_(1e-3)
    checks = check_task_stats(model, _tray_episodes())
    assert set(checks) == {"action"}
    before = model.state_proj.weight.clone()
    adopt_task_stats(model, checks)
    assert torch.equal(model.state_proj.weight, before) and float(model.state_std[6]) == pytest.approx(1e-3)
    bad = _tray_episodes(n=1)
    bad[0]["action"] = bad[0]["action"][:, :6]
    with pytest.raises(ValueError, match=r"episode 0: field 'action' has shape \(20, 6\); the policy needs \(T, 7\)"):
        check_task_stats(model, bad)
    with pytest.raises(TypeError, match="TinyVLA-style"):
        check_task_stats(torch.nn.Linear(2, 2), bad)
