"""The CRaFT bridge recipe lives in the anchors job: tap's pooling names, opaque settings in the
store's manifest, and caches written before (``pooling: mean``, no ``modules`` record) read and
resume as they were."""

import json

import pytest
import torch

from policylens.anchors import BRIDGE_POOLINGS, BridgeSpec, bridge_spec_of, build_cache, student_extractor
from policylens.models import load_model
from policylens.store import StoreError, open_store, read_manifest
from policylens.tap import POOLINGS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge") / "cache"
    build_cache("tiny_vla", "synthetic:4", str(root), kind="bridge", dtype="float32", batch_size=2, progress=False)
    return root


def _old_layout(manifest: dict) -> dict:
    """The manifest as this cache was written before: the recipe's own word for the mean, no ``modules``."""
    old = json.loads(json.dumps(manifest))
    old["meta"]["bridge"]["pooling"] = "mean"
    del old["modules"]
    return old


def test_the_spec_speaks_taps_pooling_names():
    assert set(BRIDGE_POOLINGS) == {"masked_mean", "first", "last"} and set(BRIDGE_POOLINGS) <= set(POOLINGS)
    spec = BridgeSpec.for_layers(8)
    assert (spec.raw_layer, spec.query_layer, spec.pooling, spec.noise_per_sample) == (4, 7, "masked_mean", True)
    with pytest.raises(StoreError, match=r"BridgeSpec.pooling='median'; expected one of \['masked_mean', 'first'"):
        BridgeSpec(raw_layer=1, pooling="median")
    with pytest.raises(StoreError, match="pooling='mean' \\(the old word for 'masked_mean'\\)"):
        BridgeSpec(raw_layer=1, pooling="mean")
    with pytest.raises(StoreError, match="raw_positions='middle'"):
        BridgeSpec(raw_layer=1, raw_positions="middle")


def test_recorded_settings_read_back_old_words_included():
    legacy = {"raw_layer": 2, "query_layer": 3, "raw_positions": "image", "query_positions": "action"}
    legacy["pooling"] = "mean"
    spec = BridgeSpec.from_json(legacy)
    assert spec == BridgeSpec(raw_layer=2, query_layer=3, pooling="masked_mean", noise_per_sample=False)
    assert BridgeSpec.from_json({**legacy, "pooling": "last"}).pooling == "last"
    assert BridgeSpec.from_json(spec.to_json()) == spec
    with pytest.raises(StoreError, match=r"cache x: meta.bridge has keys \['layer'\]; expected raw_layer"):
        BridgeSpec.from_json({"layer": 2}, where="cache x")


def test_the_manifest_keeps_the_recipe_as_opaque_settings(cache):
    m = read_manifest(cache)
    assert m["kind"] == "hidden_feature" and m["meta"]["pooling"] == "bridge"
    assert m["modules"] == ["policylens.anchors"]
    assert m["meta"]["bridge"] == {
        "raw_layer": 2,
        "query_layer": 3,
        "raw_positions": "image",
        "query_positions": "action",
        "pooling": "masked_mean",
        "noise_seed": 0,
        "noise_per_sample": True,
    }
    assert bridge_spec_of(m) == BridgeSpec.for_layers(4)


def test_a_manifest_in_the_old_layout_gives_the_same_student_features(cache):
    model = load_model("tiny_vla").eval()
    new = open_store(cache).manifest
    old = _old_layout(new)
    assert bridge_spec_of(old) == bridge_spec_of(new)
    batch, idx = model.example_batch(2), torch.tensor([0, 1])
    want = student_extractor(model, new)(batch, indices=idx)["target_features"]
    got = student_extractor(model, old)(batch, indices=idx)["target_features"]
    assert torch.equal(got, want)
    none = {**new, "meta": {**new["meta"], "bridge": None, "pooling": "mean_image_tokens"}}  # old non-bridge stores
    with pytest.raises(StoreError, match="is not a bridge cache"):
        bridge_spec_of(none)


def test_a_cache_written_in_the_old_words_resumes_and_keeps_them(cache, tmp_path):
    root = tmp_path / "old"
    build_cache("tiny_vla", "synthetic:4", str(root), kind="bridge", dtype="float32", batch_size=2, progress=False)
    before = open_store(root)[[0, 1, 2, 3]]["target_features"]
    (root / "manifest.json").write_text(json.dumps(_old_layout(read_manifest(root))))
    (root / "done" / "chunk-00000001").unlink()
    m = build_cache("tiny_vla", "synthetic:4", str(root), kind="bridge", dtype="float32", batch_size=2, progress=False)
    assert m["meta"]["bridge"]["pooling"] == "mean" and m["complete"] == [[0, 4]]
    assert torch.equal(open_store(root)[[0, 1, 2, 3]]["target_features"], before)
