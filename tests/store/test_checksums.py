"""Per-chunk crc32c: silent corruption is found by verify (field, chunk, samples), on read with
check=True, and by plain zarr; repair + rerun restores the store; pre-checksum stores still open."""

import json

import numpy as np
import pytest
import torch
import zarr
from _store_fixtures import TinyModel, TinySource, build, extractor, flip, meta_for

from policylens.store import ChunkDamage, StoreError, build_store, open_store, read_manifest, store_info, verify_store


@pytest.fixture
def store(tmp_path):
    build(tmp_path / "s", "hidden_feature", store_inputs=["input_ids"])  # 37 samples, chunks of 8, D=8 float16
    return tmp_path / "s"


def chunk(store, name="target_features", c=2):
    return store / "data" / name / "c" / str(c) / "0"


def test_chunk_file_is_data_then_its_crc32c(store):
    import google_crc32c

    raw = chunk(store).read_bytes()
    assert len(raw) == 8 * 8 * 2 + 4  # 8 rows x 8 float16, then the checksum
    assert int.from_bytes(raw[-4:], "little") == google_crc32c.value(raw[:-4])
    z = json.loads((store / "data" / "target_features" / "zarr.json").read_text())
    assert [c["name"] for c in z["codecs"]] == ["bytes", "crc32c"]


def test_verify_names_field_chunk_and_sample_range(store):
    assert verify_store(store).ok
    flip(chunk(store))  # bytes 16..23: sample 17
    rep = verify_store(store)
    assert not rep.ok
    assert len(rep.damaged) == 1
    d = rep.damaged[0]
    assert (d.field, d.chunk, d.start, d.stop, d.file) == ("target_features", 2, 16, 24, str(chunk(store)))
    assert "fails its crc32c checksum" in d.problem
    assert any(p.startswith("field 'target_features': chunk 2 (samples [16, 24)") for p in rep.problems)
    assert "target_features" in rep.stats  # the other chunks still get statistics
    assert store_info(store)["missing"] == [[16, 24]]
    assert store_info(store, check=False)["missing"] == []  # sizes alone cannot see it


def test_damaged_checksum_bytes_are_found_too(store):
    f = chunk(store, "input_ids", 4)
    flip(f, offset=len(f.read_bytes()) - 4, n=4)  # the stored crc32c itself
    (d,) = verify_store(store).damaged
    assert (d.field, d.chunk, d.start, d.stop) == ("input_ids", 4, 32, 37)


def test_check_true_raises_on_read_and_check_false_does_not(store):
    good = open_store(store)[17]["target_features"].clone()
    flip(chunk(store))
    plain = open_store(store)  # check=False: trusts the files, returns the damaged values
    assert not torch.equal(plain[17]["target_features"], good)
    checked = open_store(store, check=True)
    assert torch.equal(checked[3]["target_features"], open_store(store)[3]["target_features"])  # sound chunk
    with pytest.raises(StoreError, match=r"field 'target_features': chunk 2 \(samples \[16, 24\).*crc32c") as e:
        checked[17]
    assert "policylens cache verify --repair" in str(e.value)
    with pytest.raises(StoreError, match="chunk 2"):
        checked[[0, 20]]
    with pytest.raises(StoreError, match="chunk 2"):
        open_store(store, check=True, in_memory=True)[0]
    assert open_store(store, check=True, fields=["input_ids"])[17]["input_ids"].shape == (6,)  # other field: fine


def test_plain_zarr_also_rejects_the_damaged_chunk(store):
    flip(chunk(store))
    arr = zarr.open_array(str(store / "data" / "target_features"), mode="r")
    assert arr[:16].shape == (16, 8)
    with pytest.raises(ValueError, match="checksum"):
        arr[17]


def test_repair_then_rebuild_recomputes_only_damaged_chunks(store):
    good = {c: chunk(store, "target_features", c).read_bytes() for c in range(5)}
    flip(chunk(store))
    flip(chunk(store, "input_ids", 0), offset=0, n=8)
    rep = verify_store(store, repair=True)
    assert rep.repaired == [0, 2]
    assert not (store / "done" / "chunk-00000002").exists()
    assert read_manifest(store)["complete"] == []
    seen = []
    run = extractor(TinyModel(), "hidden_feature")

    class Indexed(TinySource):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "i": i}

    def counting(batch):
        seen.extend(int(i) for i in batch["i"])
        return run(batch)

    meta = meta_for("hidden_feature", "float16", TinyModel())
    kw = {"batch_size": 5, "chunk_rows": 8, "store_inputs": ["input_ids"], "progress": False}
    build_store(store, Indexed(), counting, meta, **kw)
    assert sorted({i // 8 for i in seen}) == [0, 2]  # just the repaired chunks
    assert {c: chunk(store, "target_features", c).read_bytes() for c in range(5)} == good
    assert verify_store(store).ok
    assert read_manifest(store)["complete"] == [[0, 37]]
    assert torch.equal(open_store(store, check=True)[list(range(37))]["sample_index"], torch.arange(37))


def downgrade_to_v2(root):
    """What policylens wrote before schema 3: no crc32c after the chunk data, codecs ["bytes"]."""
    m = json.loads((root / "manifest.json").read_text())
    for name in m["fields"]:
        zpath = root / "data" / name / "zarr.json"
        z = json.loads(zpath.read_text())
        z["codecs"] = [c for c in z["codecs"] if c["name"] != "crc32c"]
        zpath.write_text(json.dumps(z))
        for f in (root / "data" / name / "c").rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[:-4])
    del m["batch_size"]
    (root / "manifest.json").write_text(json.dumps({**m, "schema_version": 2}))


def test_schema_2_store_opens_and_says_checksums_are_unavailable(store):
    want = open_store(store)[list(range(37))]
    downgrade_to_v2(store)
    ds = open_store(store)
    got = ds[list(range(37))]
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert ds.manifest["schema_version"] == 3 and ds.manifest["batch_size"] is None  # migrated in memory
    with pytest.raises(StoreError, match=r"check=True, but fields .* have no per-chunk checksums.*check=False"):
        open_store(store, check=True)
    rep = verify_store(store)
    assert rep.ok
    assert any("no per-chunk checksums" in w for w in rep.warnings)
    assert store_info(store)["checksum"] is None
    z = zarr.open_array(str(store / "data" / "target_features"), mode="r")
    assert np.array_equal(z[:], want["target_features"].numpy())

    (store / "done" / "chunk-00000001").unlink()  # resume into it: the store keeps its format
    build(store, "hidden_feature", store_inputs=["input_ids"])
    assert chunk(store, "target_features", 1).stat().st_size == 8 * 8 * 2
    assert verify_store(store).ok
    assert torch.equal(open_store(store)[9]["target_features"], want["target_features"][9])


def test_chunk_damage_message():
    d = ChunkDamage("labels", 3, 24, 32, "/s/data/labels/c/3/0", "is missing")
    assert str(d) == "field 'labels': chunk 3 (samples [24, 32), file /s/data/labels/c/3/0) is missing"
