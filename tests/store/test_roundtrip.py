"""Round trip of every kind and dtype (the align kinds ``patch_grid`` / ``point_cloud`` too), kind detection,
reader paths against zarr, hashing, migration."""

import json

import numpy as np
import pytest
import torch
import zarr
from _store_fixtures import TinyModel, TinySource, build, extractor

import policylens.align  # noqa: F401  (registers the align kinds patch_grid / point_cloud)
from policylens.runs import weights_hash
from policylens.store import (
    SCHEMA_VERSION,
    StoreError,
    StoreMeta,
    build_store,
    collate,
    open_store,
    read_manifest,
    store_info,
    verify_store,
)

KINDS = ["hidden_feature", "hidden_state", "token_level"]
FEATURE = {"hidden_feature": "target_features", "hidden_state": "teacher_hidden", "token_level": "labels"}


def reference(kind: str, dtype: str, n: int = 37) -> torch.Tensor:
    """The features computed directly, one sample at a time, cast the way the store casts."""
    run = extractor(TinyModel(), kind)
    out = torch.cat([run(collate([TinySource(n)[i]]))[FEATURE[kind]] for i in range(n)])
    return out.to(getattr(torch, dtype)) if out.is_floating_point() else out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_kind_and_dtype(tmp_path, kind, dtype):
    build(tmp_path / "s", kind, dtype, store_inputs=["pixel_values", "input_ids", "attention_mask"])
    ds = open_store(tmp_path / "s")
    assert ds.kind == kind
    assert len(ds) == 37
    ref = reference(kind, dtype)
    got = ds[list(range(37))][FEATURE[kind]]
    assert got.dtype == ref.dtype
    # batched forward vs single-sample forward differ by float rounding only; the cast is exact
    if ref.is_floating_point():
        torch.testing.assert_close(got.float(), ref.float(), atol=1e-2, rtol=1e-2)
    else:
        assert torch.equal(got, ref)
    src = TinySource()
    for i in (0, 8, 36):
        s = ds[i]
        assert torch.equal(s["pixel_values"], src[i]["pixel_values"])
        assert torch.equal(s["input_ids"], src[i]["input_ids"])
        assert torch.equal(s["attention_mask"], src[i]["attention_mask"])
        assert s["attention_mask"].dtype == torch.bool
        assert int(s["sample_index"]) == i


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_bfloat16_and_all_dtypes_bit_exact(tmp_path, dtype):
    """What the extractor returned (after the cast) is what comes back, bit for bit."""
    vals = torch.randn(20, 16) * 1e3
    vals[0, :4] = torch.tensor([float("inf"), -0.0, 1e-40, 3.0e38])

    def run(batch):
        return {"target_features": vals[batch["i"]]}

    src = [{"i": i} for i in range(20)]
    build_store(tmp_path / "s", src, run, StoreMeta(kind="hidden_feature", dtype=dtype), chunk_rows=6, progress=False)
    got = open_store(tmp_path / "s")[list(range(20))]["target_features"]
    want = vals.to(getattr(torch, dtype))
    assert got.dtype == want.dtype
    bits = torch.int16 if dtype != "float32" else torch.int32
    assert torch.equal(got.view(bits), want.view(bits))


def test_memmap_reader_matches_zarr_and_ram(tmp_path):
    build(tmp_path / "s", "hidden_state", "bfloat16", store_inputs=["input_ids"])
    ds, ram = open_store(tmp_path / "s"), open_store(tmp_path / "s", in_memory=True)
    z = zarr.open_group(str(tmp_path / "s" / "data"), mode="r")
    idx = [36, 0, 9, 9, 17, 3]
    batch, batch_ram = ds[idx], ram.get_batch(np.array(idx))
    for name in ("teacher_hidden", "input_ids", "sample_index"):
        plain = np.asarray(z[name][:])[idx]
        if name == "teacher_hidden":
            plain = torch.from_numpy(plain.view(np.int16)).view(torch.bfloat16)
        else:
            plain = torch.from_numpy(plain)
        assert torch.equal(batch[name], plain)
        assert torch.equal(batch_ram[name], plain)
        assert torch.equal(torch.stack([ds[i][name] for i in idx]), plain)
        assert torch.equal(torch.stack([ram[i][name] for i in idx]), plain)
    assert torch.equal(ds[-1]["teacher_hidden"], ds[36]["teacher_hidden"])
    assert torch.equal(ds[2:5]["sample_index"], torch.tensor([2, 3, 4]))
    with pytest.raises(IndexError):
        ds[37]


def test_kind_detected_and_taps_select_layers(tmp_path):
    for kind in KINDS:
        build(tmp_path / kind, kind)
        m = read_manifest(tmp_path / kind)
        assert open_store(tmp_path / kind).kind == kind == m["kind"]
        assert m["schema_version"] == SCHEMA_VERSION
    full = open_store(tmp_path / "hidden_state")
    sub = open_store(tmp_path / "hidden_state", taps=["layers.2.out", "layers.0.out"])
    assert sub[4]["teacher_hidden"].shape == (2, 4, 8)
    assert torch.equal(sub[4]["teacher_hidden"], full[4]["teacher_hidden"][[2, 0]])
    assert torch.equal(sub[[4, 5]]["teacher_hidden"], full[[4, 5]]["teacher_hidden"][:, [2, 0]])
    assert sub.meta["taps"] == ["layers.2.out", "layers.0.out"]
    assert sub.meta["layers"] == [2, 0]


def test_manifest_records_provenance(tmp_path):
    def run(batch):
        return {"target_features": torch.ones(len(batch["i"]), 8)}

    meta = StoreMeta(kind="hidden_feature", model_id="m", weights_hash="sha256:x", dataset_id="d")
    build_store(tmp_path / "s", [{"i": i} for i in range(5)], run, meta, progress=False)
    m = read_manifest(tmp_path / "s")
    assert m["modules"] == []  # a kind of the store's own, no recipe: nothing to import on open
    assert m["meta"]["model_id"] == "m"
    assert m["meta"]["dataset_id"] == "d"
    assert m["complete"] == [[0, 5]]
    assert m["sample_index"]["field"] == "sample_index"
    assert m["sample_index"]["sha256"].startswith("sha256:")
    assert m["fields"]["target_features"] == {"shape": [8], "dtype": "float16", "role": "feature"}


def test_weights_hash_stable():
    a, b = TinyModel(), TinyModel()
    h = weights_hash(a)
    assert h == weights_hash(b) == weights_hash(dict(reversed(list(a.state_dict().items()))))
    with torch.no_grad():
        b.layers[0].weight[0, 0] += 1e-3
    assert weights_hash(b) != h
    assert weights_hash(a.to(torch.bfloat16)) != h  # dtype is part of the identity
    assert weights_hash(a).startswith("sha256:")


def test_old_schema_opens_with_defaults_and_future_schema_fails(tmp_path):
    build(tmp_path / "s", "hidden_feature")
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    old = {k: v for k, v in m.items() if k not in ("kind", "sample_index", "tool_version", "format")}
    old["schema_version"] = 1
    old["meta"] = {k: v for k, v in m["meta"].items() if k not in ("kind", "bridge", "extra")}
    path.write_text(json.dumps(old))
    ds = open_store(tmp_path / "s")
    assert ds.kind == "hidden_feature"
    assert ds.meta["extra"] == {}
    assert len(ds) == 37
    path.write_text(json.dumps({**m, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(StoreError, match="newer than this policylens supports"):
        open_store(tmp_path / "s")
    path.write_text(json.dumps({**m, "schema_version": 0}))
    with pytest.raises(StoreError, match="Migrate it by rebuilding"):
        open_store(tmp_path / "s")


@pytest.mark.parametrize(
    ("kind", "name", "shape"), [("patch_grid", "patch_features", (2, 3, 3, 4)), ("point_cloud", "xyz", (5, 3))]
)
def test_align_kinds_round_trip_and_check_their_rank(tmp_path, kind, name, shape):
    data = torch.randn(9, *shape)
    src = [{"i": i, "rgb": torch.full((5, 3), i, dtype=torch.uint8)} for i in range(9)]
    meta = StoreMeta(kind=kind, dtype="float32", taps=["enc.patch_tokens"])
    m = build_store(
        tmp_path / "s", src, lambda b: {name: data[b["i"]]}, meta, chunk_rows=4, store_inputs=["rgb"], progress=False
    )
    ds = open_store(tmp_path / "s", taps=["enc.patch_tokens"])
    assert m["kind"] == ds.kind == store_info(tmp_path / "s")["kind"] == kind and verify_store(tmp_path / "s").ok
    assert torch.equal(ds[[8, 0, 5]][name], data[[8, 0, 5]]) and torch.equal(ds[3]["rgb"], src[3]["rgb"])
    with pytest.raises(StoreError, match=rf"field '{name}' has per-sample shape \[1, .*kind='{kind}' expects {name} "):
        build_store(tmp_path / "r", src, lambda b: {name: data[b["i"]][:, None]}, meta, progress=False)


def test_kind_is_detected_from_feature_fields_only(tmp_path):
    """A stored input named like another kind's feature (``xyz``) leaves the kind detectable."""
    src = [{"i": i, "xyz": torch.zeros(4, 3)} for i in range(3)]
    meta = StoreMeta(kind="hidden_feature")
    build_store(
        tmp_path / "s",
        src,
        lambda b: {"target_features": b["xyz"].sum((1, 2))[:, None]},
        meta,
        store_inputs=["xyz"],
        progress=False,
    )
    assert open_store(tmp_path / "s").kind == "hidden_feature"


def test_meta_validation():
    with pytest.raises(StoreError, match="kind='pooled'"):
        StoreMeta(kind="pooled")
    with pytest.raises(StoreError, match="dtype='fp8'"):
        StoreMeta(kind="hidden_feature", dtype="fp8")


def test_big_rows_batch_path_and_zero_copy_views(tmp_path):
    """Rows >= 64 KB take the per-row copy path; copy=False views never write the file."""
    data = torch.randn(10, 2, 64, 256)  # 128 KB per row (float32)

    def run(batch):
        return {"teacher_hidden": data[batch["i"]]}

    meta = StoreMeta(kind="hidden_state", dtype="float32", taps=["a", "b"])
    build_store(tmp_path / "s", [{"i": i} for i in range(10)], run, meta, chunk_rows=3, progress=False)
    ds = open_store(tmp_path / "s")
    idx = [9, 0, 4, 4, 7, 1]
    assert torch.equal(ds[idx]["teacher_hidden"], data[idx])
    assert torch.equal(open_store(tmp_path / "s", taps=["b"])[idx]["teacher_hidden"], data[idx][:, [1]])
    view = open_store(tmp_path / "s", copy=False)
    row = view[4]["teacher_hidden"]
    assert torch.equal(row, data[4])
    before = (tmp_path / "s" / "data" / "teacher_hidden" / "c" / "1" / "0" / "0" / "0").read_bytes()
    row.zero_()  # copy-on-write: the file is untouched
    after = (tmp_path / "s" / "data" / "teacher_hidden" / "c" / "1" / "0" / "0" / "0").read_bytes()
    assert after == before
    assert torch.equal(open_store(tmp_path / "s")[4]["teacher_hidden"], data[4])
    copied = ds[5]["teacher_hidden"]
    copied.zero_()
    assert torch.equal(ds[5]["teacher_hidden"], data[5])  # default copy=True: reads are independent
