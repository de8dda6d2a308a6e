"""Skipped steps of a whole pre-norm torch stack in one pass: bit-identical to running the layers,
taken only when every branch of the stack reuses its cache, never for post-norm or padded calls."""

import dataclasses

import pytest
import torch
from torch import nn

from policylens.accel import BACConfig, apply_cache, cache_context, calibrate, remove_cache, reset_state
from zoo import tiny_diffusion_policy


def _layer_calls(policy):
    calls = []
    for name, m in policy.named_modules():
        if isinstance(m, nn.TransformerDecoderLayer | nn.TransformerEncoderLayer):
            m.register_forward_pre_hook(lambda mod, args, name=name: calls.append(name))
    return calls


def _run(policy, config, obs, **kw):
    with cache_context(policy, config):
        return policy.predict_action(obs, generator=torch.Generator().manual_seed(1), **kw)


@pytest.mark.parametrize("n_cond_layers", [0, 1])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_stack_equals_the_layers_bit_for_bit(n_cond_layers, batch):
    p = tiny_diffusion_policy(n_cond_layers=n_cond_layers, steps=12)
    obs = torch.randn(batch, 2, 4)
    cal = calibrate(p, torch.randn(4, 2, 4), num_updates=4, progress=False)
    configs = [
        BACConfig(mode="uniform", every=4),
        BACConfig(mode="uniform", num_updates=5),
        BACConfig(mode="optimal", calibration=cal, n_bu=1),
    ]
    for config in configs:
        fused = _run(p, config, obs)
        layers = _run(p, dataclasses.replace(config, fuse_skipped_stacks=False), obs)
        assert torch.equal(fused, layers), config
    ddim = BACConfig(mode="uniform", num_updates=3, num_steps=6)
    kw = {"sampler": "ddim", "num_inference_steps": 6}
    unfused = dataclasses.replace(ddim, fuse_skipped_stacks=False)
    assert torch.equal(_run(p, ddim, obs, **kw), _run(p, unfused, obs, **kw))


def test_layers_run_only_at_update_steps_when_fused():
    p = tiny_diffusion_policy(steps=12)
    calls = _layer_calls(p)
    obs = torch.randn(1, 2, 4)
    _run(p, BACConfig(mode="uniform", every=4, fuse_skipped_stacks=False), obs)
    assert len(calls) == 12 * 2  # every step, both decoder layers
    calls.clear()
    _run(p, BACConfig(mode="uniform", every=4), obs)
    assert len(calls) == 3 * 2  # the 3 update steps only
    calls.clear()
    p.predict_action(obs)
    assert len(calls) == 12 * 2  # removed with the cache
    assert not any("forward" in m.__dict__ for m in p.modules())


def test_a_step_where_one_branch_updates_runs_the_layers():
    p = tiny_diffusion_policy(steps=12)
    cal = calibrate(p, torch.randn(4, 2, 4), num_updates=4, progress=False)
    config = BACConfig(mode="optimal", calibration=cal, n_bu=0)
    apply_cache(p, config)
    from policylens.accel import cache_info

    schedule = cache_info(p)["schedule"]
    remove_cache(p)
    any_update = sorted({s for steps in schedule.values() for s in steps})
    calls = _layer_calls(p)
    _run(p, config, torch.randn(1, 2, 4))
    assert len(calls) == len(any_update) * 2  # steps where some branch updates run both layers


def test_post_norm_and_padded_calls_run_the_layers():
    torch.manual_seed(0)
    kw = {"d_model": 8, "nhead": 2, "dim_feedforward": 16, "dropout": 0.1, "batch_first": True}
    for norm_first in (True, False):
        stack = nn.TransformerDecoder(nn.TransformerDecoderLayer(**kw, norm_first=norm_first), num_layers=2).eval()
        calls = _layer_calls(stack)
        x, mem = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
        pad = torch.zeros(2, 5, dtype=torch.bool)
        with torch.no_grad(), cache_context(stack, BACConfig(mode="uniform", every=3, num_steps=3, reset_method=None)):
            reset_state(stack)
            first = stack(x, mem)
            second = stack(x, mem)  # every branch reuses its cache
            third = stack(x, mem, tgt_key_padding_mask=pad)  # padded: the layers run
        assert len(calls) == (4 if norm_first else 6)
        assert torch.equal(first, second) and torch.allclose(third, first, atol=1e-6)
