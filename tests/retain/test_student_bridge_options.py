"""A bridge cache built with several flow steps, unpooled tokens or the action output: retain reads
the options from the store's manifest, so the teacher as its own student has L_ret = 0 on the
anchor samples (bit for bit on the build's batch), the gradient reaches the action head and the
expert, and a manifest whose taps disagree with its options is refused."""

import json

import pytest
import torch

from policylens.anchors import build_cache, student_extractor
from policylens.models import load_model
from policylens.retain import Retainer, RetentionConfig, open_anchors
from policylens.store import StoreError, open_store

OPTIONS = {
    "steps_action": {"flow_steps": (0, 4, 9), "action": True},
    "all_unpooled": {"flow_steps": "all", "pooling": "none"},
    "last_step_first_token": {"flow_steps": (9,), "pooling": "first", "action": True},
}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridges")
    for name, options in OPTIONS.items():
        build_cache("tiny_vla", "synthetic:6", str(root / name), kind="bridge", dtype="float32", batch_size=4,
                    progress=False, bridge=options)  # fmt: skip
    return root


def _inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("target_features", "sample_index")}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_the_teacher_as_student_has_zero_retention_loss(caches, name):
    model = load_model("tiny_vla").eval()
    anchors = open_anchors(caches / name, model)  # what retain train opens: one sample through the student
    recorded = anchors.store.manifest["meta"]["bridge"]
    assert all(recorded[k] == (list(v) if isinstance(v, tuple) else v) for k, v in OPTIONS[name].items())
    retainer = Retainer(model, lambda m, b: m(**b), anchors.student, RetentionConfig())
    same = anchors.batch([0, 1, 2, 3])  # the build's first batch
    feats = anchors.student(_inputs(same), indices=same["sample_index"])["target_features"]
    assert torch.equal(feats.detach(), same["target_features"]) and float(retainer.retention(same)) == 0.0
    assert float(retainer.retention(anchors.batch([5, 0, 3]))) < 1e-12  # other rows and batch size
    model.zero_grad()
    feats.pow(2).mean().backward()
    reached = [
        model.expert.layers[3].mlp.down_proj.weight,
        model.paligemma.language_model.layers[0].mlp.down_proj.weight,
    ]
    if OPTIONS[name].get("action") or OPTIONS[name]["flow_steps"] != (0,):  # later steps follow the velocities
        reached.append(model.action_out.weight)
    for p in reached:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_a_manifest_whose_taps_disagree_with_its_options_is_refused(caches):
    model = load_model("tiny_vla").eval()
    manifest = json.loads(json.dumps(open_store(caches / "steps_action").manifest))
    manifest["meta"]["taps"] = manifest["meta"]["taps"][:2]  # no action head
    with pytest.raises(StoreError, match=r"manifest taps \[.*\] are not its bridge spec's .*'action_out.out'\]"):
        student_extractor(model, manifest)
    manifest = json.loads(json.dumps(open_store(caches / "steps_action").manifest))
    manifest["meta"]["bridge"]["flow_steps"] = [0, 4]  # a narrower feature than the store holds
    run = student_extractor(model, manifest)
    with pytest.raises(StoreError, match=r"bridge features of shape \[488\], but this model gives \[368\]"):
        run(model.example_batch(1), indices=torch.tensor([0]))
    manifest["meta"]["bridge"]["flow_steps"] = [0, 12]
    with pytest.raises(StoreError, match=r"the model runs 10 flow steps \(indices 0..9\)"):
        student_extractor(model, manifest)
