"""Default chunk rows follow the dataset size, the row size and the number of ranks: every store
gets about 16 chunks (4 per rank with more than 4 ranks) of at most 4 MiB, so each rank has work
and an interrupted build keeps the chunks it finished."""

import itertools

import pytest
import torch

from policylens.store import FieldSpec, StoreMeta, build_store, default_chunk_rows, open_store, read_manifest
from policylens.store._layout import num_chunks, rank_chunks
from policylens.store._sizing import CHUNKS_PER_RANK, MAX_CHUNK_BYTES, MIN_CHUNKS

FEAT = {"target_features": FieldSpec([2048], "float16"), "sample_index": FieldSpec([], "int64", "index")}  # 4 KiB
BIG = {"teacher_hidden": FieldSpec([4, 544, 128], "float16")}  # 557 KB rows
TINY_VLA = {"target_features": FieldSpec([128], "float16")}  # 256 B rows


@pytest.mark.parametrize(
    ("fields", "n", "batch", "world", "rows"),
    [
        (FEAT, 1_000_000, 1, 1, 1024),  # capped at 4 MiB
        (FEAT, 10_000, 1, 1, 625),  # 16 chunks of 2.4 MiB
        (FEAT, 10_000, 48, 1, 624),  # ... rounded down to whole batches
        (FEAT, 1000, 1, 1, 63),  # 16 chunks however small (was 256 rows: 4 chunks)
        (FEAT, 1000, 48, 1, 48),
        (FEAT, 8, 1, 1, 1),
        (FEAT, 1, 64, 1, 1),  # never more rows than samples
        (BIG, 600, 1, 1, 7),
        (BIG, 600, 8, 1, 8),  # one batch even if that passes 4 MiB
        (BIG, 3, 1, 1, 1),
        (TINY_VLA, 8, 8, 1, 8),
        (TINY_VLA, 100_000, 1, 1, 6250),
        (TINY_VLA, 512, 8, 1, 32),  # was one 512-row chunk: one rank of a torchrun did it all
        (TINY_VLA, 512, 8, 2, 32),  # up to 4 ranks: the single-process chunking
        (TINY_VLA, 512, 8, 3, 32),
        (TINY_VLA, 512, 8, 8, 16),  # 8 ranks: 32 chunks, 4 each
        (TINY_VLA, 300, 8, 1, 16),
        (FEAT, 100, 64, 2, 64),  # a batch each
        (FEAT, 100, 64, 3, 33),  # fewer batches than ranks: chunks below a batch, one for every rank
        (TINY_VLA, 2, 1, 3, 1),  # fewer samples than ranks: one sample a chunk
        ({"x": FieldSpec([3, 1024, 1024], "float32")}, 10, 4, 1, 4),  # 12 MiB rows: one batch per chunk
    ],
)
def test_default_chunk_rows_values(fields, n, batch, world, rows):
    assert default_chunk_rows(fields, n, batch, world) == rows


def test_default_chunk_rows_bounds_hold_everywhere():
    for row_floats, n, batch, world in itertools.product(
        [1, 64, 2048, 300_000, 3_000_000], [1, 7, 100, 512, 10_000, 10**6], [1, 5, 64], [1, 2, 3, 8, 64]
    ):
        fields = {"f": FieldSpec([row_floats], "float32")}
        width = 4 * row_floats
        rows = default_chunk_rows(fields, n, batch, world)
        chunks = num_chunks(n, rows)
        case = (row_floats, n, batch, world, rows)
        assert 1 <= rows <= n, case
        if rows < n and rows % batch:
            assert n < world * batch, case  # batches stay whole unless the ranks could not all have one
        assert rows * width <= max(MAX_CHUNK_BYTES, batch * width), case
        ranks_with_work = sum(len(rank_chunks(chunks, r, world)) > 0 for r in range(world))
        assert ranks_with_work == min(world, n), case  # every rank works (one sample at least each)
        target = max(MIN_CHUNKS, CHUNKS_PER_RANK * world)
        assert chunks >= min(target // 2, n // batch), case  # several chunks a rank when there are batches
    with pytest.raises(ValueError, match="num_samples=0"):
        default_chunk_rows(FEAT, 0)
    with pytest.raises(ValueError, match="world_size=0"):
        default_chunk_rows(FEAT, 10, 1, 0)


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
