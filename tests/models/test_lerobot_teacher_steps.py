"""``LeRobotTeacher.sample_actions(steps=k)`` runs k flow steps on LeRobot's SmolVLA / pi0 (the CI stand-ins:
SmolVLA reads ``config.num_steps``, pi0 ``config.num_inference_steps``); the config is restored after the
call, also when it raises; the default is the config's count."""

import pytest
import torch

from lerobot_zoo import Pi0LikeConfig, Pi0LikePolicy, byte_preprocessor, pi0_like_batch
from policylens.models import LeRobotTeacher
from smolvla_zoo import SmolVLALikeConfig, SmolVLALikePolicy, smolvla_like_batch

K = 4
FIELD = {"smolvla": "num_steps", "pi0": "num_inference_steps"}


def _teacher(variant: str, steps: int = K) -> LeRobotTeacher:
    if variant == "smolvla":
        policy = SmolVLALikePolicy(SmolVLALikeConfig(num_steps=steps), seed=3)
        return LeRobotTeacher(policy, byte_preprocessor(policy, max_tokens=6), "smolvla").eval()
    policy = Pi0LikePolicy(Pi0LikeConfig(num_inference_steps=steps), seed=3)
    return LeRobotTeacher(policy, byte_preprocessor(policy), "pi0").eval()


def _batch(teacher: LeRobotTeacher) -> dict:
    p = teacher.policy
    return smolvla_like_batch(p, 2) if teacher.variant == "smolvla" else pi0_like_batch(p, 2)


def _expert_calls(teacher: LeRobotTeacher, **kwargs) -> tuple[int, torch.Tensor]:
    """The action head's calls (one per flow step in both stand-ins) and the actions."""
    calls = [0]
    handle = teacher.policy.model.action_out_proj.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        out = teacher.sample_actions(_batch(teacher), generator=torch.Generator().manual_seed(0), **kwargs)
    finally:
        handle.remove()
    return calls[0], out


@pytest.mark.parametrize("variant", ["smolvla", "pi0"])
@pytest.mark.parametrize("k", [1, 2, 7])
def test_steps_k_runs_k_flow_steps_as_a_policy_configured_with_k(variant, k):
    teacher = _teacher(variant)
    calls, actions = _expert_calls(teacher, steps=k)
    assert calls == k
    assert getattr(teacher.policy.config, FIELD[variant]) == K  # restored
    _, want = _expert_calls(_teacher(variant, steps=k))  # the same weights, k steps in its config
    assert torch.equal(actions, want)
    if k != K:
        assert not torch.equal(actions, _expert_calls(teacher)[1])  # the step count changed the actions


@pytest.mark.parametrize("variant", ["smolvla", "pi0"])
def test_default_is_the_configs_count(variant):
    teacher = _teacher(variant)
    calls, actions = _expert_calls(teacher)
    assert calls == K
    assert torch.equal(actions, _expert_calls(teacher, steps=None)[1])
    assert torch.equal(actions, _expert_calls(teacher, steps=K)[1])


@pytest.mark.parametrize("variant", ["smolvla", "pi0"])
def test_steps_with_grad_and_noise(variant):
    teacher = _teacher(variant)
    noise = torch.randn(2, *teacher.noise_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = teacher.sample_actions(_batch(teacher), noise=noise, steps=2)
    got = teacher.sample_actions(_batch(teacher), noise=noise, steps=2, grad=True)
    assert got.requires_grad and torch.allclose(got, want, atol=1e-6, rtol=0)
    assert getattr(teacher.policy.config, FIELD[variant]) == K


@pytest.mark.parametrize("variant", ["smolvla", "pi0"])
def test_config_restored_when_the_call_raises(variant):
    teacher = _teacher(variant)

    def boom(*_args):
        raise RuntimeError("expert failed")

    handle = teacher.policy.model.action_out_proj.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="expert failed"):
            teacher.sample_actions(_batch(teacher), steps=2)
    finally:
        handle.remove()
    assert getattr(teacher.policy.config, FIELD[variant]) == K


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_bad_steps_named(steps):
    teacher = _teacher("pi0")
    with pytest.raises(ValueError, match=r"sample_actions: steps="):
        teacher.sample_actions(_batch(teacher), steps=steps)
    assert teacher.policy.config.num_inference_steps == K
