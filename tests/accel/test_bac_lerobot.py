"""BAC on LeRobot's flow-matching experts behind ``LeRobotTeacher``, on the CI stand-ins that call their
layers as LeRobot 0.4.4 does (SmolVLA: in pieces; pi0: the expert's ``GemmaModel`` per flow step).

Every step updated is bit-identical to the uncached policy; a uniform schedule equals the model run with
the branch values substituted by hand (forward hooks on ``o_proj`` / ``mlp``, or ``self_attn`` / ``mlp``,
written here); a skipped SmolVLA attention runs neither its projections nor its attention function;
LeRobot's in-place residual add (``out += hidden``) leaves the cache intact; calibration records the
weights hash and LeRobot's step count."""

import types

import pytest
import torch

from lerobot_zoo import Pi0LikeConfig, Pi0LikePolicy, byte_preprocessor, pi0_like_batch
from policylens.accel import (
    BACConfig,
    action_error,
    cache_context,
    cache_info,
    calibrate,
    compare_modes,
    default_steps,
    discover_branches,
    model_hash,
)
from policylens.models import LeRobotTeacher
from smolvla_zoo import SmolVLALikeConfig, SmolVLALikePolicy, smolvla_like_batch

K = 4


def _smolvla(**kw) -> LeRobotTeacher:
    cfg = SmolVLALikeConfig(num_steps=K, **kw)
    cfg.n_action_steps = 2
    policy = SmolVLALikePolicy(cfg)
    return LeRobotTeacher(policy, byte_preprocessor(policy, max_tokens=6), "smolvla").eval()


def _pi0() -> LeRobotTeacher:
    cfg = Pi0LikeConfig(num_inference_steps=K)
    cfg.n_action_steps = 2
    policy = Pi0LikePolicy(cfg)
    return LeRobotTeacher(policy, byte_preprocessor(policy), "pi0").eval()


def _batch(teacher: LeRobotTeacher) -> dict:
    p = teacher.policy
    return smolvla_like_batch(p, 2) if teacher.variant == "smolvla" else pi0_like_batch(p, 2)


def _expert_layers(teacher: LeRobotTeacher):
    if teacher.variant == "smolvla":
        return list(teacher.policy.model.vlm_with_expert.lm_expert.layers)
    return list(teacher.policy.model.paligemma_with_expert.gemma_expert.model.layers)


def _run(teacher, batch, seed=0):
    return teacher.sample_actions(batch, generator=torch.Generator().manual_seed(seed))


def _copy(value):
    return tuple(_copy(v) for v in value) if isinstance(value, tuple) else value if value is None else value.clone()


def _hand_cached(teacher, batch, updates: list[int]):
    """The uncached model with each expert branch's output replaced, at the steps not in ``updates``, by
    its output at the latest update step (forward hooks; nothing from accel)."""
    handles = []
    for layer in _expert_layers(teacher):
        attn = layer.self_attn.o_proj if teacher.variant == "smolvla" else layer.self_attn
        for module in (attn, layer.mlp):
            state = {"calls": 0, "value": None}

            def hook(m, args, out, state=state):
                step = state["calls"] % K
                state["calls"] += 1
                if step in updates:
                    state["value"] = _copy(out)
                    return None
                return _copy(state["value"])

            handles.append(module.register_forward_hook(hook))
    try:
        return _run(teacher, batch)
    finally:
        for h in handles:
            h.remove()


def _count_calls(module, name: str, counter: list[int]):
    """Count calls of ``module.<name>`` (an instance attribute, removed afterwards)."""
    orig = getattr(module, name)

    def counted(*a, **k):
        counter[0] += 1
        return orig(*a, **k)

    setattr(module, name, counted)
    return lambda: delattr(module, name)


def _inplace_forward(self, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, fill_kv_cache):
    """SmolVLMWithExpertLike.forward with LeRobot's in-place residual adds on the branch outputs."""
    models = [self.get_vlm_model().text_model, self.lm_expert]
    model_layers = self.get_model_layers(models)
    batch_size = next(h for h in inputs_embeds if h is not None).shape[0]
    for idx in range(self.num_vlm_layers):
        joint = fill_kv_cache or idx % self.self_attn_every_n_layers == 0
        method = self.forward_attn_layer if joint else self.forward_cross_attn_layer
        outs, past_key_values = method(
            model_layers, inputs_embeds, idx, position_ids, attention_mask, batch_size, 8,
            use_cache=use_cache, fill_kv_cache=fill_kv_cache, past_key_values=past_key_values,
        )  # fmt: skip
        result, start = [], 0
        for i, hidden in enumerate(inputs_embeds):
            layer, out = model_layers[i][idx], outs[i] if i < len(outs) else outs[0]
            if hidden is None or layer is None:
                result.append(hidden)
                continue
            end = start + hidden.shape[1]
            x = layer.self_attn.o_proj(out[:, start:end])
            x += hidden
            residual = x.clone()
            y = layer.mlp(layer.post_attention_layernorm(x))
            y += residual
            result.append(y)
            start = end if len(outs) == 1 else 0
        inputs_embeds = result
    return [None if h is None else m.norm(h) for m, h in zip(models, inputs_embeds, strict=True)], past_key_values


def test_profiles_name_the_expert_and_lerobot_step_count():
    smol, pi0 = _smolvla(), _pi0()
    assert default_steps(smol) == K and default_steps(pi0) == K
    names = [b.name for b in discover_branches(smol, "policy.model.vlm_with_expert.lm_expert")]
    root = "policy.model.vlm_with_expert.lm_expert.layers"
    assert names == [f"{root}.{i}.{b}" for i in range(4) for b in ("self_attn", "mlp")]
    outputs = [type(b.output).__name__ for b in discover_branches(smol, "policy.model.vlm_with_expert.lm_expert")]
    assert outputs[:2] == ["Linear", "LlamaMLP"]  # o_proj, mlp: what LeRobot's code executes
    with cache_context(smol, BACConfig(mode="uniform", num_updates=2)):
        assert sorted(cache_info(smol)["schedule"]) == sorted(names)  # the expert only, never the VLM
    assert [b.name for b in discover_branches(pi0, "policy.model.paligemma_with_expert.gemma_expert.model")][:2] == [
        "policy.model.paligemma_with_expert.gemma_expert.model.layers.0.self_attn",
        "policy.model.paligemma_with_expert.gemma_expert.model.layers.0.mlp",
    ]


@pytest.mark.parametrize("case", ["smolvla", "smolvla self_attn", "smolvla sdpa", "smolvla inplace", "pi0"])
def test_every_step_updated_is_bit_identical_and_uniform_equals_hand_cache(case):
    if case == "pi0":
        teacher = _pi0()
    else:
        kw = {"smolvla self_attn": {"attention_mode": "self_attn"}, "smolvla sdpa": {"attention": "sdpa"}}
        teacher = _smolvla(**kw.get(case, {}))
        if case == "smolvla inplace":
            vlm = teacher.policy.model.vlm_with_expert
            vlm.forward = types.MethodType(_inplace_forward, vlm)
    batch = _batch(teacher)
    plain = _run(teacher, batch)
    with cache_context(teacher, BACConfig(mode="uniform", every=1)):
        assert cache_info(teacher)["skipped_fraction"] == 0.0
        every = _run(teacher, batch)
        again = _run(teacher, batch)  # reset per chunk
    assert torch.equal(every, plain) and torch.equal(again, plain)
    updates = [0, 2]
    with cache_context(teacher, BACConfig(mode="uniform", num_updates=2)):
        assert cache_info(teacher)["schedule"][next(iter(cache_info(teacher)["schedule"]))] == updates
        cached = _run(teacher, batch)
        second = _run(teacher, batch)
    hand = _hand_cached(teacher, batch, updates)
    assert torch.equal(cached, hand) and torch.equal(second, hand)
    assert not torch.equal(cached, plain)  # the skipped steps did reuse something
    assert torch.equal(_run(teacher, batch), plain)  # removed: the model is as it was


def test_skipped_smolvla_attention_runs_no_projections_or_attention():
    teacher = _smolvla()
    vlm = teacher.policy.model.vlm_with_expert
    batch = _batch(teacher)
    counts = {"attention": [0], "q": [0], "k": [0]}
    undo = [_count_calls(vlm, "eager_attention_forward", counts["attention"])]
    layer = vlm.lm_expert.layers[1]  # a cross-attention layer: k_proj re-projects the prefix's keys
    undo += [_count_calls(layer.self_attn.q_proj, "forward", counts["q"])]
    undo += [_count_calls(layer.self_attn.k_proj, "forward", counts["k"])]
    try:
        _run(teacher, batch)
        uncached = {k: v[0] for k, v in counts.items()}
        for v in counts.values():
            v[0] = 0
        with cache_context(teacher, BACConfig(mode="uniform", num_updates=2)):
            _run(teacher, batch)
    finally:
        for u in reversed(undo):
            u()
    n_vlm = teacher.policy.config.num_vlm_layers
    assert uncached == {"attention": n_vlm + K * 4, "q": K, "k": K}  # prefix pass + every step's expert
    assert {k: v[0] for k, v in counts.items()} == {"attention": n_vlm + 2 * 4, "q": 2, "k": 2}


def test_calibration_records_hash_and_steps_and_applies():
    teacher = _smolvla()
    batch = _batch(teacher)
    cal = calibrate(teacher, batch, num_updates=2, batch_size=2, progress=False)
    assert cal.num_steps == K and cal.model_hash == model_hash(teacher)
    assert cal.block_names[0] == "policy.model.vlm_with_expert.lm_expert.layers.0.self_attn"
    assert len(cal.block_names) == 8 and all(len(s) == 2 and s[0] == 0 for s in cal.schedule.values())
    with cache_context(teacher, BACConfig(mode="optimal", calibration=cal)):
        actions = _run(teacher, batch)
        with pytest.raises(ValueError, match="steps=3"):
            teacher.sample_actions(batch, steps=3)
    assert torch.isfinite(actions).all()


def test_compare_modes_splits_prefix_and_expert_and_reads_n_action_steps():
    teacher = _pi0()
    batch = _batch(teacher)
    rows = compare_modes(
        teacher, {"original": None, "uniform": BACConfig(mode="uniform", num_updates=2)}, batch, calls=1, warmup=0
    )
    for row in rows:
        assert row["steps"] == K and row["prefix_ms"] > 0 and row["expert_ms"] > 0
        assert row["expert_step_ms"] == pytest.approx(row["expert_ms"] / K)
    assert rows[0]["mse"] == 0 and "expert_speedup" in rows[1]
    plain = _run(teacher, batch)
    with cache_context(teacher, BACConfig(mode="uniform", num_updates=2)):
        cached = _run(teacher, batch)
    want = action_error(plain[:, :2], cached[:, :2])  # n_action_steps = 2
    assert rows[1]["mse_executed"] == pytest.approx(want["mse"]) and rows[1]["mse_executed"] > 0
