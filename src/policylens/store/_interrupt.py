"""What an interrupted build keeps: SIGINT / SIGTERM stop it, and every sample computed stays.

A build stopped by Ctrl-C (SIGINT) or by torchrun / a scheduler (SIGTERM) first lets the
writer thread write every finished chunk it was handed, then writes the chunk it was
filling, padded with zeros, and ``done/part-<c>`` with the number of its rows that are
computed (whole batches). It then raises :class:`BuildInterrupted` (a ``KeyboardInterrupt``)
saying how many samples the store holds. Rerunning the same build restores those rows (after
checking the files' crc32c and sample ids) and computes the chunk on from there with the same
batches, so the finished store is the same bytes as an uninterrupted build's.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._chunks import read_chunk, write_chunk
from ._layout import chunk_file, done_chunks, kept_ranges, mark_partial, part_rows, partial_chunks
from ._schema import MANIFEST, FieldSpec, read_manifest

__all__ = ["BuildInterrupted", "kept_samples", "restore_partial", "save_partial", "signals_interrupt"]


class BuildInterrupted(KeyboardInterrupt):
    """A build stopped on SIGINT / SIGTERM after writing what it had computed; rerun it to resume.

    ``kept`` of ``total`` samples are in the store at ``root``; ``signum`` is the signal."""

    def __init__(self, root: str | os.PathLike, kept: int, total: int, signum: int = signal.SIGINT) -> None:
        self.root, self.kept, self.total, self.signum = Path(root), kept, total, int(signum)
        name = signal.Signals(self.signum).name
        super().__init__(f"{name}: kept {kept} of {total} samples in {self.root}; rerun the same build to resume")


class _Caught:
    signum: int | None = None


@contextmanager
def signals_interrupt() -> Iterator[_Caught]:
    """Within the block SIGTERM raises ``KeyboardInterrupt`` as SIGINT does, and ``caught.signum``
    says which came. Handlers a program installed itself are left alone, and so is everything
    outside the main thread (where Python cannot install handlers)."""
    caught = _Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, _frame: object) -> None:
        caught.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {s: signal.getsignal(s) for s in defaults}
    mine = [s for s, h in previous.items() if h is defaults[s]]
    for s in mine:
        signal.signal(s, handler)
    try:
        yield caught
    finally:
        for s in mine:
            signal.signal(s, previous[s])


def save_partial(
    root: Path, chunk: int, bufs: Mapping[str, np.ndarray], rows: int, checksum: Mapping[str, bool]
) -> None:
    """Write chunk ``chunk``'s buffers with the rows from ``rows`` on zeroed, then its partial marker."""
    for name, buf in bufs.items():
        buf[rows:] = 0
        write_chunk(chunk_file(root, name, chunk, buf.ndim), buf, checksum[name])
    mark_partial(root, chunk, rows)


def restore_partial(
    root: Path,
    chunk: int,
    fields: Mapping[str, FieldSpec],
    bufs: Mapping[str, np.ndarray],
    index: np.ndarray,
    checksum: Mapping[str, bool],
) -> int:
    """Copy the rows an interrupted build kept of ``chunk`` into ``bufs``; returns how many (0 when
    none were kept, or their files fail their size / crc32c check or hold other sample ids than
    ``index``, the chunk's dataset indices: then the chunk is computed from its start)."""
    kept = part_rows(root, chunk)
    if not 0 < kept <= len(index):
        return 0
    rows = len(next(iter(bufs.values())))
    found = {}
    for name, spec in fields.items():
        a = read_chunk(chunk_file(root, name, chunk, 1 + len(spec.shape)), rows, spec, checksum[name])
        if a is None:
            return 0
        found[name] = a[:kept]
    if "sample_index" in found and not np.array_equal(found["sample_index"], index[:kept]):
        return 0
    for name, a in found.items():
        bufs[name][:kept] = a
    return kept


def kept_samples(root: str | os.PathLike, num_samples: int) -> tuple[int, int]:
    """``(samples the store at root holds, samples it will hold)``: ``(0, num_samples)`` before it exists."""
    if not (Path(root) / MANIFEST).is_file():
        return 0, num_samples
    m = read_manifest(root)
    ranges = kept_ranges(done_chunks(root), partial_chunks(root), m["chunk_rows"], m["num_samples"])
    return sum(b - a for a, b in ranges), m["num_samples"]
