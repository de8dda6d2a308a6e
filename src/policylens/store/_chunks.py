"""What one chunk file holds, and how damage to it is found and described.

A chunk file of field ``f`` is the chunk's rows as raw little-endian C-order bytes (zarr v3's
``bytes`` codec) followed by their 4-byte crc32c (zarr v3's ``crc32c`` codec, the checksum
stored little endian after the data). The data part is still a plain array at offset 0, so the
reader memory-maps it as before; any zarr v3 reader checks the checksum on its own. Stores
written before schema version 3 have no checksum (codecs ``["bytes"]`` only): they still
open, but their damage can only be found by size. Which form a field has is read from its
``zarr.json``, the one place that says how its chunks are encoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c  # a dependency of zarr >= 3 (its crc32c codec)
import numpy as np

from ._layout import chunk_file, chunk_range, field_dir
from ._schema import FieldSpec, storage_dtype

CHECKSUM = "crc32c"
TAIL = 4  # bytes of checksum after the data
CODECS = ["bytes", CHECKSUM]  # what this policylens writes
LEGACY_CODECS = ["bytes"]  # schema version <= 2: no checksum


def crc32c(payload: bytes) -> int:
    """crc32c of ``payload`` (Castagnoli, as zarr's ``crc32c`` codec computes it)."""
    return google_crc32c.value(payload)


def seal(payload: bytes) -> bytes:
    """``payload`` followed by its crc32c, as zarr's ``crc32c`` codec stores it."""
    return payload + np.uint32(crc32c(payload)).astype("<u4").tobytes()


def field_codecs(root: str | os.PathLike, name: str) -> list[str] | None:
    """The codec names of field ``name``'s array (``None`` when its ``zarr.json`` is missing)."""
    path = field_dir(root, name) / "zarr.json"
    if not path.is_file():
        return None
    return [c["name"] for c in json.loads(path.read_text()).get("codecs", [])]


def has_checksum(codecs: list[str]) -> bool:
    return codecs == CODECS


def write_chunk(path: Path, buf: np.ndarray, checksum: bool = True) -> None:
    """Write one full chunk ``(chunk_rows, *shape)`` as zarr's ``bytes`` codec stores it (raw C order,
    little endian), followed by its crc32c when ``checksum`` (zarr's ``crc32c`` codec), through a
    temp file + rename so a kill never leaves a torn chunk file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = np.ascontiguousarray(buf, dtype=buf.dtype.newbyteorder("<")).tobytes()
    with open(tmp, "wb") as f:
        f.write(seal(payload) if checksum else payload)
    os.replace(tmp, path)


def read_chunk(path: Path, rows: int, spec: FieldSpec, checksummed: bool) -> np.ndarray | None:
    """The ``(rows, *shape)`` array in chunk file ``path``; ``None`` when its size or crc32c is wrong."""
    if size_problem(path, file_bytes(rows, spec.row_bytes, checksummed)) is not None:
        return None
    data = path.read_bytes()
    payload = data[: rows * spec.row_bytes]
    if checksummed and checksum_problem(payload, data[len(payload) :]) is not None:
        return None
    return np.frombuffer(payload, storage_dtype(spec.dtype)).reshape(rows, *spec.shape)


def file_bytes(rows: int, row_bytes: int, checksummed: bool) -> int:
    """Size of a complete chunk file: ``rows`` rows of ``row_bytes`` (+ the checksum)."""
    return rows * row_bytes + (TAIL if checksummed else 0)


def size_problem(path: Path, expect: int) -> str | None:
    """``None`` when ``path`` exists with ``expect`` bytes, else what is wrong with it."""
    size = path.stat().st_size if path.is_file() else None
    if size == expect:
        return None
    return "is missing" if size is None else f"has {size} bytes, expected {expect} (truncated or overwritten)"


def checksum_problem(payload: bytes, tail: bytes) -> str | None:
    """``None`` when ``tail`` (the 4 bytes after the data) holds ``payload``'s crc32c, else the mismatch."""
    stored = int.from_bytes(tail, "little")
    computed = crc32c(payload)
    if stored == computed and len(tail) == TAIL:
        return None
    return (
        f"fails its crc32c checksum (stored {stored:#010x}, computed {computed:#010x}): "
        "its bytes changed after the build wrote them"
    )


@dataclass(frozen=True)
class ChunkDamage:
    """One damaged chunk of one field: which samples ``[start, stop)`` and what is wrong."""

    field: str
    chunk: int
    start: int
    stop: int
    file: str
    problem: str

    def __str__(self) -> str:
        return (
            f"field {self.field!r}: chunk {self.chunk} (samples [{self.start}, {self.stop}), "
            f"file {self.file}) {self.problem}"
        )


def scan_field(
    root: str | os.PathLike,
    name: str,
    spec: FieldSpec,
    rows: int,
    num_samples: int,
    chunks: Iterable[int],
    checksummed: bool,
    read: bool = True,
) -> Iterator[tuple[int, np.ndarray | None, ChunkDamage | None]]:
    """Check field ``name``'s files of ``chunks`` one at a time (constant memory).

    Yields ``(chunk, rows (stop - start, *shape) or None, damage or None)``. ``read=False``
    checks file sizes only (no data read, no checksum, rows ``None``).
    """
    payload = rows * spec.row_bytes
    for c in chunks:
        start, stop = chunk_range(c, rows, num_samples)
        path = chunk_file(root, name, c, 1 + len(spec.shape))
        problem = size_problem(path, file_bytes(rows, spec.row_bytes, checksummed))
        data = None
        if problem is None and read:
            with open(path, "rb") as f:
                data, tail = f.read(payload), f.read()
            problem = checksum_problem(data, tail) if checksummed else None
        if problem is not None:
            yield c, None, ChunkDamage(name, c, start, stop, str(path), problem)
        elif data is None:
            yield c, None, None
        else:
            a = np.frombuffer(data, storage_dtype(spec.dtype)).reshape(rows, *spec.shape)
            yield c, a[: stop - start], None
