"""Bad input gets a clear StoreError naming the path and the field / file, and verify catches it."""

import json

import pytest
import torch
from _store_fixtures import build

from policylens.store import StoreError, StoreMeta, build_store, open_store, verify_store


@pytest.fixture
def store(tmp_path):
    build(tmp_path / "s", "hidden_feature", store_inputs=["input_ids"])
    return tmp_path / "s"


def test_missing_manifest(tmp_path):
    with pytest.raises(StoreError, match=r"No manifest.json in store .*nowhere.*does not exist"):
        open_store(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a policylens feature store"):
        open_store(tmp_path / "empty")
    assert not verify_store(tmp_path / "empty").ok


def test_truncated_chunk(store):
    f = store / "data" / "target_features" / "c" / "2" / "0"
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(
        StoreError, match=r"field 'target_features': chunk 2 \(samples \[16, 24\).*10 bytes.*truncated"
    ) as e:
        open_store(store)
    assert str(store) in str(e.value)
    assert "policylens cache verify --repair" in str(e.value)
    rep = verify_store(store)
    assert not rep.ok
    assert any("c/2/0) has 10 bytes, expected 132" in p for p in rep.problems)  # 8 rows x 8 x 2 B + crc32c


def test_missing_chunk_and_repair_then_resume(store):
    f = store / "data" / "input_ids" / "c" / "1" / "0"
    good = f.read_bytes()
    f.unlink()
    with pytest.raises(
        StoreError, match=r"field 'input_ids': chunk 1 \(samples \[8, 16\), file .*input_ids.*\) is missing"
    ):
        open_store(store)
    rep = verify_store(store, repair=True)
    assert rep.repaired == [1]
    assert not (store / "done" / "chunk-00000001").exists()
    with pytest.raises(StoreError, match=r"incomplete: samples \[\[8, 16\]\]"):
        open_store(store)
    part = open_store(store, allow_incomplete=True)
    assert part[0]["input_ids"].shape == (6,)
    with pytest.raises(StoreError, match=r"samples \[8, 16\] are not complete"):
        part[9]
    build(store, "hidden_feature", store_inputs=["input_ids"])  # resume recomputes chunk 1 only
    assert f.read_bytes() == good
    assert verify_store(store).ok


def test_wrong_kind_and_unknown_tap_and_field(store):
    with pytest.raises(StoreError, match=r"holds kind='hidden_feature'.*kind='hidden_state' was asked"):
        open_store(store, kind="hidden_state")
    with pytest.raises(StoreError, match=r"has no tap 'layers.9.out'; its taps are \['layers.1.out'\]"):
        open_store(store, taps=["layers.9.out"])
    with pytest.raises(StoreError, match="has no field 'pixel_values'"):
        open_store(store, fields=["pixel_values"])


def test_resume_with_other_settings_refused(store):
    with pytest.raises(StoreError, match=r"different settings \(meta.dtype 'float16' vs 'bfloat16'\)"):
        build(store, "hidden_feature", "bfloat16", store_inputs=["input_ids"])
    with pytest.raises(StoreError, match="num_samples 37 vs 30"):
        build(store, "hidden_feature", n=30, store_inputs=["input_ids"])


def test_extractor_output_problems(tmp_path):
    src = [{"i": i} for i in range(4)]
    with pytest.raises(StoreError, match=r"kind='token_level' needs a field 'labels'"):
        build_store(tmp_path / "a", src, lambda b: {"x": torch.ones(len(b["i"]), 2)}, StoreMeta(kind="token_level"))
    with pytest.raises(StoreError, match=r"expects teacher_hidden \[n_layers, n_vecs, D\] \(rank 3\)"):
        build_store(
            tmp_path / "b",
            src,
            lambda b: {"teacher_hidden": torch.ones(len(b["i"]), 2)},
            StoreMeta(kind="hidden_state"),
        )

    def ragged(b):
        return {"target_features": torch.ones(len(b["i"]), 2 + int(b["i"][0]))}

    with pytest.raises(StoreError, match=r"field 'target_features' has batch shape \(1, 3\); expected \(1, 2\)"):
        build_store(
            tmp_path / "c",
            src,
            ragged,
            StoreMeta(kind="hidden_feature"),
            batch_size=1,
            chunk_rows=1,
            progress=False,
        )


def test_verify_flags_nan_and_repeated_rows(tmp_path):
    def nan_rows(b):
        x = b["i"].float()[:, None].repeat(1, 4)
        x[b["i"] == 3] = float("nan")
        return {"target_features": x}

    src = [{"i": i} for i in range(6)]
    build_store(tmp_path / "n", src, nan_rows, StoreMeta(kind="hidden_feature"), progress=False)
    rep = verify_store(tmp_path / "n")
    assert any("4 NaN/Inf values in samples [3]" in p for p in rep.problems)
    build_store(
        tmp_path / "r",
        src,
        lambda b: {"target_features": torch.ones(len(b["i"]), 4)},
        StoreMeta(kind="hidden_feature"),
        progress=False,
    )
    rep = verify_store(tmp_path / "r")
    assert any("every sample equals its neighbour" in p for p in rep.problems)
    assert rep.stats["target_features"]["neighbour_identical_frac"] == 1.0


def test_inconsistent_manifest_kind(store):
    path = store / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "kind": "token_level"}))
    with pytest.raises(StoreError, match="look like kind='hidden_feature'"):
        open_store(store)
