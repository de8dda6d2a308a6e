"""The student's bridge features come from the cache's own extractor, driven by the store's
manifest: 0 retention loss at step 0, gradients into the policy, and a clear error for a cache
the model cannot match. retain reaches that extractor through the store's recipe registry, never
by importing the anchors job."""

import json
import subprocess
import sys

import pytest
import torch

from policylens.anchors import build_cache, shift_left, student_extractor
from policylens.models import TinyVLA, TinyVLAConfig, load_model
from policylens.retain import AnchorSet, Retainer, RetentionConfig
from policylens.store import StoreError, open_store


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge") / "cache"
    build_cache("tiny_vla", "synthetic:6", str(root), kind="bridge", dtype="float32", batch_size=4, progress=False)
    return root


def _inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("target_features", "sample_index")}


def test_retention_loss_is_exactly_zero_at_step_zero_and_the_graph_reaches_the_weights(cache):
    model = load_model("tiny_vla").eval()
    anchors = AnchorSet(cache, model)
    retainer = Retainer(model, lambda m, b: m(**b), anchors.student, RetentionConfig())
    same = anchors.batch([0, 1, 2, 3])  # the build's first batch
    feats = anchors.student(_inputs(same), indices=same["sample_index"])["target_features"]
    assert torch.equal(feats.detach(), same["target_features"]) and float(retainer.retention(same)) == 0.0
    # other rows, order and batch size: the same noise per sample; CPU kernels round differently per batch shape
    other = anchors.batch([5, 0, 3])
    assert float(retainer.retention(other)) < 1e-12
    feats.pow(2).mean().backward()
    assert model.paligemma.language_model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0


def test_a_cache_the_model_cannot_match_raises(cache, tmp_path):
    manifest = open_store(cache).manifest
    small = TinyVLA(TinyVLAConfig(layers=2, image_size=112))
    with pytest.raises(StoreError, match="taps.*which this model does not have"):
        student_extractor(small, manifest)
    narrow = TinyVLA(TinyVLAConfig(expert_width=32, image_size=112))
    run = student_extractor(narrow, manifest)
    batch = narrow.example_batch(2)
    with pytest.raises(StoreError, match=r"bridge features of shape \[192\], but this model gives \[160\]"):
        run(batch, indices=torch.tensor([0, 1]))
    build_cache("tiny_vla", "synthetic:2", str(tmp_path / "hf"), progress=False)
    with pytest.raises(StoreError, match="is not a bridge cache.*--kind bridge"):
        student_extractor(load_model("tiny_vla"), open_store(tmp_path / "hf").manifest)
    legacy = json.loads(json.dumps(manifest))
    del legacy["meta"]["bridge"]["noise_per_sample"]
    with pytest.raises(StoreError, match="one noise generator per batch"):
        student_extractor(load_model("tiny_vla"), legacy)


def test_positions_and_pooling_from_the_manifest_are_honoured(cache):
    model = load_model("tiny_vla").eval()
    manifest = json.loads(json.dumps(open_store(cache).manifest))
    batch = model.example_batch(2)
    idx = torch.tensor([0, 1])
    base = student_extractor(model, manifest)(batch, indices=idx)["target_features"]
    manifest["meta"]["bridge"].update(query_positions="vla_adapter")  # TinyVLA's prefix starts with patches
    shifted = student_extractor(model, manifest)(batch, indices=idx)["target_features"]
    manifest["meta"]["bridge"].update(raw_positions="image", query_positions="action", pooling="last")
    last = student_extractor(model, manifest)(batch, indices=idx)["target_features"]
    assert not torch.allclose(base, shifted) and not torch.allclose(base, last)
    mask = torch.tensor([[False, True, True, False], [False, False, True, True]])
    assert shift_left(mask).tolist() == [[True, True, False, False], [False, True, True, False]]
    with pytest.raises(ValueError, match="starts at position 0"):
        shift_left(torch.tensor([[True, False]]))


FRESH = """
import sys
import policylens.retain
assert "policylens.anchors" not in sys.modules  # importing retain does not import the anchors job
from policylens.store import open_store, recipe_hook
manifest = open_store(sys.argv[1]).manifest
for role in ("student", "source"):
    f = recipe_hook(manifest, "bridge", role)
    print(f"{f.__module__}.{f.__name__}")
"""


@pytest.mark.parametrize("layout", ["current", "old"])
def test_a_fresh_process_finds_the_student_through_the_store(cache, tmp_path, layout):
    """What AnchorSet asks the store for, in a process that never imported the anchors job: the
    manifest names the package of its recipe; an old one (no record, ``pooling: mean``) is served
    by importing policylens's packages until one registers the recipe."""
    path = cache
    if layout == "old":
        path = tmp_path / "old"
        path.mkdir()
        for item in cache.iterdir():
            (path / item.name).symlink_to(item)
        (path / "manifest.json").unlink()
        old = json.loads((cache / "manifest.json").read_text())
        del old["modules"]
        old["meta"]["bridge"]["pooling"] = "mean"
        (path / "manifest.json").write_text(json.dumps(old))
    out = subprocess.run([sys.executable, "-c", FRESH, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    found = out.stdout.split()
    assert found == ["policylens.anchors._bridge.student_extractor", "policylens.anchors._sources.source_of"]
    anchors = AnchorSet(path, load_model("tiny_vla").eval())
    same = anchors.batch([0, 1, 2, 3])  # the build's first batch: L_ret = 0 in either layout
    feats = anchors.student(_inputs(same), indices=same["sample_index"])["target_features"]
    assert torch.equal(feats.detach(), same["target_features"])
