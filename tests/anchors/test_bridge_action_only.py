"""The action output alone (``BridgeSpec(hidden=False, action=True)``, or ``AnchorSet(features=
"action")`` on a cache built with the action output) and how far the student's pass runs.

References are written here from TinyVLA's own pieces (``run_prefix``, ``velocity``): the action
features are the velocity at the sample's seeded noise and t = 1; a fixed-λ step on them is the
gradient of L_act + λ·mean((v_student − v_teacher)²) by autograd; module calls are counted with
forward hooks of this file."""

import copy

import pytest
import torch

from policylens.anchors import BridgeSpec, build_cache
from policylens.anchors._bridge import bridge_extractor
from policylens.models import load_model
from policylens.retain import AnchorSet, Retainer, RetentionConfig
from policylens.store import StoreError


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("action_only")
    for name, options in (("action", {"action": True}), ("default", None)):
        build_cache("tiny_vla", "synthetic:4", str(root / name), kind="bridge", dtype="float32", batch_size=4,
                    progress=False, bridge=options)  # fmt: skip
    return root


def _velocity(model, batch, indices, seed=0):
    """v(x=noise_i, t=1) per sample, noise_i from a generator seeded seed + i."""
    noise = torch.stack([torch.randn(model.noise_shape, generator=torch.Generator().manual_seed(seed + int(i)))
                         for i in indices])  # fmt: skip
    kv, valid = model.run_prefix(batch)
    t = torch.ones(noise.shape[0])
    return model.velocity(kv, valid, model.normalize("state", batch["state"]), noise, t).flatten(1)


def test_action_only_features_are_the_velocity_at_the_seeded_noise():
    model = load_model("tiny_vla").eval()
    spec = BridgeSpec.for_layers(model.config.layers, action=True, hidden=False)
    run, taps = bridge_extractor(model, spec)
    assert taps == ["action_out.out"]
    batch = model.example_batch(3, seed=5)
    got = run(batch, indices=torch.tensor([2, 0, 7]))["target_features"]
    with torch.no_grad():
        ref = _velocity(model, batch, [2, 0, 7])
    assert got.shape == (3, model.config.chunk_size * model.config.action_dim)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_hidden_false_needs_the_action_and_is_recorded_only_when_off():
    with pytest.raises(StoreError, match="hidden=False.*action=True"):
        BridgeSpec(raw_layer=0, hidden=False)
    assert "hidden" not in BridgeSpec(raw_layer=0).to_json()
    assert BridgeSpec(raw_layer=0, action=True, hidden=False).to_json()["hidden"] is False


def _counts(model, spec, batch):
    calls = {"llm": 0, "expert": 0, "action_out": 0}
    modules = {"llm": model.paligemma.language_model.layers[-1], "expert": model.expert.layers[-1],
               "action_out": model.action_out}  # fmt: skip

    def counter(name):
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    hooks = [m.register_forward_hook(counter(name)) for name, m in modules.items()]
    run, _ = bridge_extractor(model, spec, grad=True)
    run(batch, indices=torch.arange(2))
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"llm": 1, "expert": 1, "action_out": 0}),  # stops at the last expert layer, before the head
        ({"action": True}, {"llm": 1, "expert": 1, "action_out": 1}),
        ({"action": True, "hidden": False}, {"llm": 1, "expert": 1, "action_out": 1}),
        ({"flow_steps": (0, 3)}, {"llm": 1, "expert": 4, "action_out": 3}),  # no step past the last one kept
    ],
)
def test_the_student_pass_runs_the_prefix_once_and_stops_at_the_last_bridge_tap(options, expected):
    model = load_model("tiny_vla").train()
    spec = BridgeSpec.for_layers(model.config.layers, **options)
    assert _counts(model, spec, model.example_batch(2, seed=1)) == expected


def test_action_view_of_a_cache_built_with_the_action(caches):
    model = load_model("tiny_vla").eval()
    full, view = AnchorSet(caches / "action", model), AnchorSet(caches / "action", model, features="action")
    width = model.config.chunk_size * model.config.action_dim
    rows = [3, 1]
    b_full, b_view = full.batch(rows), view.batch(rows)
    assert torch.equal(b_view["target_features"], b_full["target_features"][:, -width:])
    inputs = {k: v for k, v in b_view.items() if k not in ("target_features", "sample_index")}
    with torch.no_grad():
        ref = _velocity(model, inputs, b_view["sample_index"])
        got = view.student(inputs, indices=b_view["sample_index"])["target_features"]
    torch.testing.assert_close(b_view["target_features"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(StoreError, match="--bridge-action"):
        AnchorSet(caches / "default", model, features="action")


def test_a_fixed_step_on_the_action_view_is_action_distillation(caches):
    teacher = load_model("tiny_vla").eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.action_out.weight.add_(0.05)  # away from the teacher: the distillation loss is not 0
    view = AnchorSet(caches / "action", student, features="action")
    lam = 0.7
    task = student.example_batch(2, seed=9, with_action=True)

    def task_loss(m, b):
        torch.manual_seed(0)  # the flow time is drawn from the global generator
        return m.loss(b, generator=torch.Generator().manual_seed(0))

    anchor = view.batch([0, 2])
    retainer = Retainer(student, task_loss, view.student, RetentionConfig(method="fixed", lam=lam))
    retainer.backward(task, anchor)
    got = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    ref_model = copy.deepcopy(student)
    ref_model.zero_grad()
    inputs = {k: v for k, v in anchor.items() if k not in ("target_features", "sample_index")}
    with torch.no_grad():
        v_teacher = _velocity(teacher, inputs, anchor["sample_index"])
    v_student = _velocity(ref_model, inputs, anchor["sample_index"])
    loss = task_loss(ref_model, task) + lam * (v_student - v_teacher).pow(2).mean()
    loss.backward()
    ref = {n: p.grad for n, p in ref_model.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6)
