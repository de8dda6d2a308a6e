"""How many rows a store's chunk holds: ``default_chunk_rows``.

The chunk is the unit of the rank split (each torchrun rank writes a contiguous block of
chunks), of resume after a SIGKILL (a chunk without its done marker is recomputed) and of
reading (one memory map per chunk). So a store gets about ``MIN_CHUNKS`` chunks, or
``CHUNKS_PER_RANK`` per rank when more ranks build it, whatever its size: 512 TinyVLA samples
are 16 chunks of 32 rows, not one chunk that one rank computes while the others wait. Up to
4 ranks the chunking is that of a single process, so their stores are the same bytes. A chunk
holds at most ``MAX_CHUNK_BYTES`` of the widest field (``bench/store_io.py``: batched reads
gain up to there, writes are flat from 1 to 16 MiB), and whole batches.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import StoreError
from ._layout import num_chunks
from ._schema import FieldSpec

__all__ = ["CHUNKS_PER_RANK", "MAX_CHUNK_BYTES", "MIN_CHUNKS", "default_chunk_rows"]

MAX_CHUNK_BYTES = 4 << 20
MIN_CHUNKS = 16  # a SIGKILL loses at most ~1/16 of the work; the rank split stays even
CHUNKS_PER_RANK = 4  # with more ranks than MIN_CHUNKS / 4: ranks finish within a chunk of each other


def default_chunk_rows(
    fields: Mapping[str, FieldSpec], num_samples: int, batch_size: int = 1, world_size: int = 1
) -> int:
    """Rows per chunk for ``num_samples`` samples of ``fields`` written by ``world_size`` ranks.

    Aims at ``max(MIN_CHUNKS, CHUNKS_PER_RANK * world_size)`` chunks; a chunk of the widest
    field holds at most ``MAX_CHUNK_BYTES`` (one batch even if that is more). Rows are a
    whole number of batches (at least one) so batches stay full, unless that would leave a
    rank without a chunk: then ``num_samples // world_size`` rows, so each of the first
    ``num_samples`` ranks gets one. Never more rows than ``num_samples``.
    """
    if num_samples < 1:
        raise StoreError(f"default_chunk_rows: num_samples={num_samples}; expected >= 1.")
    if batch_size < 1 or world_size < 1:
        raise StoreError(f"default_chunk_rows: batch_size={batch_size}, world_size={world_size}; expected >= 1.")
    widest = max(f.row_bytes for f in fields.values())
    most = max(1, MAX_CHUNK_BYTES // widest)
    target = max(MIN_CHUNKS, CHUNKS_PER_RANK * world_size)
    rows = min(most, -(-num_samples // target))
    rows = min(num_samples, max(batch_size, rows // batch_size * batch_size))
    if num_chunks(num_samples, rows) < min(world_size, num_samples):
        rows = max(1, num_samples // world_size)
    return int(rows)
