"""torchrun ranks (RANK / WORLD_SIZE, gloo on CPU) all work on a store with default chunking, and
their store is the single-process build, byte for byte: the manifest included, since chunking up
to 4 ranks does not depend on the world size and the manifest records none."""

from pathlib import Path

import pytest
from _rank_worker import N
from _store_fixtures import TinyModel, TinySource, extractor, meta_for

from gloo_ranks import run_ranks
from policylens.store import build_store, open_store, rank_ranges, read_manifest, verify_store

WORKER = Path(__file__).with_name("_rank_worker.py")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref") / "s"
    model = TinyModel()
    build_store(
        root, TinySource(N), extractor(model, "hidden_state"), meta_for("hidden_state", "bfloat16", model),
        batch_size=8, progress=False, rank=0, world_size=1,
    )  # fmt: skip
    return root


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_computes_its_share_and_the_store_is_the_single_process_one(tmp_path, reference, world):
    seen = run_ranks(WORKER, world, tmp_path)  # N = 512 samples: one 512-row chunk before, rank 0 did all
    per_rank = [set(seen[str(r)]) for r in range(world)]
    m = read_manifest(tmp_path / "s")
    assert m["chunk_rows"] == 32 and m["complete"] == [[0, N]]
    probe = set(range(8))  # the rank that creates the store runs the first batch to learn the field shapes
    extra = []
    for r, s in enumerate(per_rank):
        (start, stop), *more = rank_ranges(m, r, world)
        block = set(range(start, stop))
        assert not more and stop - start >= 32  # a contiguous block of whole chunks: every rank works
        assert s >= block and s - block in (set(), probe), (r, sorted(s - block))  # its block, nothing else
        extra.append(s - block)
    assert sum(map(len, extra)) <= len(probe)
    sizes = [len(s) for s in per_rank]
    assert max(sizes) - min(sizes) <= 32 + 8  # ranks finish within a chunk (+ the probe) of each other
    assert _files(tmp_path / "s") == _files(reference)
    assert verify_store(tmp_path / "s").ok
    assert open_store(tmp_path / "s")[list(range(N))]["sample_index"].tolist() == list(range(N))
