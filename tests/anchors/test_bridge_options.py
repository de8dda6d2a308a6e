"""Bridges that cover more of what the actions depend on: the expert at several or all flow steps,
per-token (unpooled) features, the action head's output. Each option's features equal an
independent reference (plain hooks, an explicit Euler loop on the model's own time grid, pooling
in float64 loops: ``_bridge_reference``); capture waits for the calls it needs; old settings read
as before; bad values name the field and what is allowed."""

import pytest
import torch
from _bridge_reference import reference_features

from policylens.anchors import (
    ACTION_TAP,
    BRIDGE_POOLING_CHOICES,
    BRIDGE_POOLINGS,
    BridgeSpec,
    bridge_extractor,
    bridge_spec_of,
)
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.store import StoreError
from policylens.tap import POOLINGS, capture
from zoo import tiny_diffusion_policy

STEPS = 5  # the small model's flow steps
CFG = TinyVLAConfig(image_size=28, layers=2, flow_steps=STEPS)  # 4 patches per camera, 8 image tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyVLA(CFG).eval()


@pytest.fixture(scope="module")
def batch(model):
    return model.example_batch(3, seed=1)


def test_bad_values_name_the_field_and_what_is_allowed():
    assert set(BRIDGE_POOLING_CHOICES) == {*BRIDGE_POOLINGS, "none"} and set(BRIDGE_POOLING_CHOICES) <= set(POOLINGS)
    for steps in ((4, 0), (0, 0), (-1,), (), "some", "0,4", (True,), (0.5,)):
        with pytest.raises(StoreError, match=r"BridgeSpec.flow_steps=.*expected increasing flow-step indices from 0"):
            BridgeSpec(raw_layer=1, flow_steps=steps)
    with pytest.raises(StoreError, match=r"BridgeSpec.pooling='median'; expected one of \[.*'last', 'none'\]"):
        BridgeSpec(raw_layer=1, pooling="median")
    with pytest.raises(StoreError, match=r"BridgeSpec.action='yes'; expected true or false"):
        BridgeSpec(raw_layer=1, action="yes")
    spec = BridgeSpec(raw_layer=1, flow_steps=(0, 4))
    assert spec.steps_of(10) == (0, 4) and BridgeSpec(raw_layer=1, flow_steps="all").steps_of(3) == (0, 1, 2)
    with pytest.raises(StoreError, match=r"flow_steps=\[0, 4\]: the model runs 4 flow steps \(indices 0..3\)"):
        spec.steps_of(4)
    with pytest.raises(StoreError, match=r"does not say its number of flow steps \(config.flow_steps\); use flow_ste"):
        spec.steps_of(None)
    assert BridgeSpec(raw_layer=1).steps_of(None) == (0,)  # step 0 alone needs no schedule


def test_settings_are_recorded_when_set_and_old_manifests_read_as_before():
    default = BridgeSpec.for_layers(4)
    assert "flow_steps" not in default.to_json() and "action" not in default.to_json()  # what earlier versions wrote
    old = {"raw_layer": 2, "query_layer": 3, "pooling": "mean", "noise_per_sample": True}  # no new fields
    read = BridgeSpec.from_json(old)
    assert (read.flow_steps, read.action, read.pooling) == ((0,), False, "masked_mean") and read == default
    for kwargs in ({"flow_steps": (0, 4, 9)}, {"flow_steps": "all", "action": True}, {"pooling": "none"}):
        spec = BridgeSpec.for_layers(4, **kwargs)
        recorded = spec.to_json()
        assert {k: recorded[k] for k in kwargs} == {
            k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()
        }
        assert BridgeSpec.from_json(recorded) == spec
        manifest = {"kind": "hidden_feature", "meta": {"pooling": "bridge", "bridge": recorded}}
        assert bridge_spec_of(manifest) == spec
    with pytest.raises(StoreError, match="BridgeSpec.flow_steps=\\[3, 1\\]"):
        BridgeSpec.from_json({"raw_layer": 2, "flow_steps": [3, 1]})


def test_capture_waits_for_the_calls_it_is_told(model, batch):
    expert, head = "expert.layers.1.out", ACTION_TAP
    heads = []
    hook = model.action_out.register_forward_hook(lambda *_: heads.append(1))
    try:
        with capture(model, [expert], stop_early=True) as cap:
            model.sample_actions(batch)
        assert len(cap.calls(expert)) == 1 and len(heads) == 0  # unchanged: every tap once
        with capture(model, [expert], stop_early={expert: 3}) as cap:
            model.sample_actions(batch)
        assert len(cap.calls(expert)) == 3 and len(heads) == 2  # stopped inside the third flow step
        heads.clear()
        with capture(model, ["llm.layers.0.out", expert, head], stop_early={expert: 2, head: 2}) as cap:
            model.sample_actions(batch)
        assert [len(cap.calls(t)) for t in ("llm.layers.0.out", expert, head)] == [1, 2, 2] and len(heads) == 2
        with capture(model, [expert], stop_early={expert: 99}) as cap:  # more than the forward makes: it ends
            model.sample_actions(batch)
        assert len(cap.calls(expert)) == STEPS
    finally:
        hook.remove()
    bad_counts = [
        ({"llm.layers.0.out": 2}, "names \\['llm.layers.0.out'\\], which are not captured"),
        ({expert: 0}, "must be integers >= 1"),
        ({expert: True}, "must be integers >= 1"),
    ]
    for bad, match in bad_counts:
        with pytest.raises(ValueError, match=match), capture(model, [expert], stop_early=bad):
            pass


CASES = [
    {},
    {"flow_steps": (0, 2, 4)},
    {"flow_steps": "all", "pooling": "first", "action": True},
    {"flow_steps": (1, 3), "pooling": "last", "action": True},
    {"pooling": "none"},
    {"pooling": "none", "flow_steps": (0, 4), "query_positions": "vla_adapter", "action": True},
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_features_equal_the_explicit_reference(model, batch, options):
    spec = BridgeSpec.for_layers(CFG.layers, noise_seed=7, **options)
    run, taps = bridge_extractor(model, spec)
    assert taps[-1] == ACTION_TAP if spec.action else ACTION_TAP not in taps
    idx = torch.tensor([4, 0, 9])
    got = run(batch, indices=idx)["target_features"]
    steps = range(STEPS) if spec.flow_steps == "all" else spec.flow_steps
    want = reference_features(
        model,
        batch,
        idx.tolist(),
        raw_layer=spec.raw_layer,
        query_layer=spec.query_layer,
        steps=list(steps),
        pooling=spec.pooling,
        action=spec.action,
        query_shifted=spec.query_positions == "vla_adapter",
        seed=7,
    )
    n_steps, per = len(steps), (1 if spec.pooling != "none" else 8)  # 8 image tokens, 8 action queries
    width = per * CFG.width + n_steps * per * CFG.expert_width + spec.action * n_steps * CFG.chunk_size * CFG.action_dim
    assert got.dtype == torch.float32 and tuple(got.shape) == (3, width)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    if n_steps > 1:  # each step its own record: later steps are not step 0 repeated
        d = CFG.expert_width * per
        first, second = got[:, per * CFG.width :][:, :d], got[:, per * CFG.width :][:, d : 2 * d]
        assert not torch.allclose(first, second)


def test_the_schedule_is_the_models_own(model, batch):
    """Step 3 of a 5-step schedule is not step 3 of a 10-step one: the reference on another grid
    differs, so the comparison above checks the time values."""
    spec = BridgeSpec.for_layers(CFG.layers, flow_steps=(3,), action=True)
    got = bridge_extractor(model, spec)[0](batch, indices=torch.arange(3))["target_features"].double()
    other = TinyVLA(TinyVLAConfig(**{**CFG.to_dict(), "flow_steps": 10})).eval()
    other.load_state_dict(model.state_dict())
    kwargs = {"raw_layer": 1, "query_layer": 1, "steps": [3], "action": True}
    assert not torch.allclose(got, reference_features(other, batch, [0, 1, 2], **kwargs), atol=1e-4)
    torch.testing.assert_close(got, reference_features(model, batch, [0, 1, 2], **kwargs), atol=1e-5, rtol=1e-5)


def test_the_student_pass_keeps_the_graph_and_equals_the_teacher_pass(model, batch):
    spec = BridgeSpec.for_layers(CFG.layers, flow_steps=(0, 2), pooling="none", action=True)
    idx = torch.tensor([0, 1, 2])
    teacher = bridge_extractor(model, spec)[0](batch, indices=idx)["target_features"]
    student = bridge_extractor(model, spec, grad=True)[0](batch, indices=idx)["target_features"]
    assert student.requires_grad and torch.equal(student.detach(), teacher)
    model.zero_grad()
    student.pow(2).sum().backward()
    for p in (model.action_out.weight, model.expert.layers[1].mlp.down_proj.weight, model.action_in.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad()


def test_models_that_cannot_give_an_option_are_refused_when_the_extractor_is_made():
    policy = tiny_diffusion_policy()  # no action head tap, no flow_steps in its config
    with pytest.raises(StoreError, match=r"BridgeSpec.action=True reads the action head's output \('action_out.out'\)"):
        bridge_extractor(policy, BridgeSpec.for_layers(2, action=True))
    with pytest.raises(StoreError, match="does not say its number of flow steps"):
        bridge_extractor(policy, BridgeSpec.for_layers(2, flow_steps="all"))
    with pytest.raises(StoreError, match=r"the model runs 5 flow steps \(indices 0..4\)"):
        bridge_extractor(TinyVLA(CFG), BridgeSpec.for_layers(2, flow_steps=(0, 5)))
