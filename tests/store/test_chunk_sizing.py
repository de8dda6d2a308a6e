"""Default chunk rows follow the dataset size and the row size: small stores stay small, big ones
get ~1-4 MiB chunks, and an interrupted build keeps the chunks it finished."""

import itertools

import pytest
import torch

from policylens.store import FieldSpec, StoreMeta, build_store, default_chunk_rows, open_store, read_manifest
from policylens.store._layout import num_chunks
from policylens.store._writer import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, MIN_CHUNKS

FEAT = {"target_features": FieldSpec([2048], "float16"), "sample_index": FieldSpec([], "int64", "index")}  # 4 KiB
BIG = {"teacher_hidden": FieldSpec([4, 544, 128], "float16")}  # 557 KB rows
TINY_VLA = {"target_features": FieldSpec([128], "float16")}  # 256 B rows


@pytest.mark.parametrize(
    ("fields", "n", "batch", "rows"),
    [
        (FEAT, 1_000_000, 1, 1024),  # capped at 4 MiB
        (FEAT, 10_000, 1, 625),  # 16 chunks of 2.4 MiB
        (FEAT, 10_000, 48, 624),  # ... rounded down to whole batches
        (FEAT, 1000, 1, 256),  # never below 1 MiB while there are more samples
        (FEAT, 1000, 48, 240),
        (FEAT, 8, 1, 8),  # never more rows than samples
        (FEAT, 1, 64, 1),
        (BIG, 600, 1, 7),
        (BIG, 600, 8, 8),  # one batch even if that passes 4 MiB
        (BIG, 3, 1, 2),  # 1.1 MB chunks: no chunk under 1 MiB
        (TINY_VLA, 8, 8, 8),  # was 16384 rows (4.2 MB for 8 samples)
        (TINY_VLA, 100_000, 1, 6250),
        ({"x": FieldSpec([3, 1024, 1024], "float32")}, 10, 4, 4),  # 12 MiB rows: one batch per chunk
    ],
)
def test_default_chunk_rows_values(fields, n, batch, rows):
    assert default_chunk_rows(fields, n, batch) == rows


def test_default_chunk_rows_bounds_hold_everywhere():
    for row_floats, n, batch in itertools.product(
        [1, 64, 2048, 300_000, 3_000_000], [1, 7, 100, 10_000, 10**6], [1, 5, 64]
    ):
        fields = {"f": FieldSpec([row_floats], "float32")}
        width = 4 * row_floats
        rows = default_chunk_rows(fields, n, batch)
        case = (row_floats, n, batch, rows)
        assert 1 <= rows <= n, case
        if rows < n:
            assert rows % batch == 0, case  # chunk-aligned batches stay full
        assert rows * width <= max(MAX_CHUNK_BYTES, batch * width), case
        if n * width >= MIN_CHUNKS * MIN_CHUNK_BYTES and batch * width <= MIN_CHUNK_BYTES:
            assert num_chunks(n, rows) >= MIN_CHUNKS // 2, case  # a kill loses a small part
    with pytest.raises(ValueError, match="num_samples=0"):
        default_chunk_rows(FEAT, 0)


def _files_bytes(root) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_small_store_is_small(tmp_path):
    src = [{"i": i} for i in range(8)]

    def run(b):
        return {"target_features": b["i"].float()[:, None] + torch.arange(128.0)}  # (B, 128)

    m = build_store(tmp_path / "s", src, run, StoreMeta(kind="hidden_feature"), batch_size=8, progress=False)
    assert m["chunk_rows"] == 8
    assert _files_bytes(tmp_path / "s" / "data") < 8 * 256 + 8 * 8 + 8 + 4096  # data + index + crc + zarr.json
    assert torch.equal(open_store(tmp_path / "s")[7]["target_features"], 7 + torch.arange(128.0).half())


def test_interrupted_build_keeps_its_finished_chunks(tmp_path):
    """4096 samples of 4 KiB: 16 chunks of 256 rows; a crash after 10 batches of 64 keeps 2 chunks,
    and the rerun computes only the rest (with 4 MiB chunks it would redo all 640 samples)."""
    n, seen = 4096, []
    src = [{"i": i} for i in range(n)]

    def run(b):
        if len(seen) == 10 * 64 and crash:
            raise RuntimeError("killed")
        seen.extend(b["i"].tolist())
        return {"target_features": b["i"].float()[:, None] + torch.arange(1024.0)}  # (B, 1024) float32

    meta = StoreMeta(kind="hidden_feature", dtype="float32")
    crash = True
    with pytest.raises(RuntimeError, match="killed"):
        build_store(tmp_path / "s", src, run, meta, batch_size=64, progress=False)
    assert read_manifest(tmp_path / "s")["chunk_rows"] == 256
    assert sorted(p.name for p in (tmp_path / "s" / "done").iterdir()) == ["chunk-00000000", "chunk-00000001"]
    crash, seen = False, []
    build_store(tmp_path / "s", src, run, meta, batch_size=64, progress=False)
    assert seen == list(range(512, n))  # chunks 0 and 1 were not recomputed
    ds = open_store(tmp_path / "s", check=True)
    assert torch.equal(ds[[0, 511, 4095]]["target_features"][:, 0], torch.tensor([0.0, 511.0, 4095.0]))
