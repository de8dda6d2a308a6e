"""Build a feature store from a source and an extractor: chunked, resumable, multi-rank.

The main thread runs the extractor (the model forward) batch by batch; a writer thread
takes finished chunks from a bounded queue, writes each field's chunk file as zarr's
``bytes`` + ``crc32c`` codecs store it (data, then its checksum) and then the chunk's done
marker, so disk I/O overlaps with compute and a kill leaves only unmarked chunks.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._chunks import CODECS, LEGACY_CODECS, field_codecs, has_checksum, seal
from ._create import clean_stale_temps, create_once
from ._errors import StoreError
from ._layout import chunk_file, chunk_range, dist_env, done_chunks, mark_done, num_chunks, ranges_of, rank_chunks
from ._schema import FieldSpec, StoreMeta, make_manifest, read_manifest, storage_dtype, write_manifest

Extractor = Callable[[dict[str, Any]], Mapping[str, Tensor]]
MAX_CHUNK_BYTES = 4 << 20  # bench/store_io.py: batched reads gain up to here, writes are flat 1-16 MiB
MIN_CHUNK_BYTES = 1 << 20  # below this, per-chunk costs (files, markers, maps) start to show
MIN_CHUNKS = 16  # between those bounds, aim for this many chunks: a kill loses at most ~1/16


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack per-sample dicts into a batch dict (tensors / arrays / numbers stacked, others listed)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if isinstance(vals[0], Tensor | np.ndarray | int | float | bool):
            out[key] = torch.stack([torch.as_tensor(v) for v in vals])
        else:
            out[key] = vals
    return out


def to_storage(t: Tensor, logical: str) -> np.ndarray:
    """Tensor (B, ...) -> NumPy array in the on-disk dtype (bfloat16 as its uint16 bit pattern)."""
    t = t.detach().to("cpu")
    if logical == "bfloat16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    return t.to(getattr(torch, logical)).contiguous().numpy()


def _logical(t: Tensor, feature_dtype: str) -> str:
    return feature_dtype if t.is_floating_point() else str(t.dtype).removeprefix("torch.")


def _index_hash(indices: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest()


def default_chunk_rows(fields: Mapping[str, FieldSpec], num_samples: int, batch_size: int = 1) -> int:
    """Rows per chunk from the dataset size and the widest field's row size.

    A chunk of the widest field holds at most ``MAX_CHUNK_BYTES``; between ``MIN_CHUNK_BYTES``
    and that, chunks shrink so the store has about ``MIN_CHUNKS`` of them (the unit of resume
    and of the rank split); never more rows than ``num_samples``, at least one. Below
    ``num_samples`` the rows are a whole number of batches (at least one) so that batches
    stay full.
    """
    if num_samples < 1:
        raise StoreError(f"default_chunk_rows: num_samples={num_samples}; expected >= 1.")
    widest = max(f.row_bytes for f in fields.values())
    most = max(1, MAX_CHUNK_BYTES // widest)
    least = min(most, -(-MIN_CHUNK_BYTES // widest))  # rows of at least 1 MiB
    rows = min(most, max(least, -(-num_samples // MIN_CHUNKS)))
    if rows >= num_samples:
        return int(num_samples)
    return int(min(num_samples, max(batch_size, rows // batch_size * batch_size)))


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


class _Writer(threading.Thread):
    """Writes queued chunks (all fields) then their done markers; re-raises errors in the caller."""

    def __init__(self, root: Path, maxsize: int, checksum: Mapping[str, bool]) -> None:
        super().__init__(daemon=True, name="policylens-store-writer")
        self.root, self.q, self.error = root, queue.Queue(maxsize=maxsize), None
        self.checksum = checksum  # field -> its chunks carry a crc32c (False: a pre-v3 store)

    def run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is not None:
                continue
            chunk, bufs = item
            try:
                for name, buf in bufs.items():
                    write_chunk(chunk_file(self.root, name, chunk, buf.ndim), buf, self.checksum[name])
                mark_done(self.root, chunk)
            except BaseException as exc:  # surfaced in put()/close()
                self.error = exc

    def put(self, item: tuple) -> None:
        self._check()
        self.q.put(item)

    def close(self) -> None:
        self.q.put(None)
        self.join()
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise StoreError(f"writing store {str(self.root)!r} failed: {self.error}") from self.error


def _run(extractor: Extractor, batch: dict, indices: np.ndarray) -> Mapping[str, Any]:
    """``extractor(batch)``, or ``extractor(batch, indices=...)`` (the samples' dataset indices) for
    an extractor marked ``takes_indices`` (per-sample noise seeds)."""
    if getattr(extractor, "takes_indices", False):
        return extractor(batch, indices=torch.as_tensor(np.asarray(indices, dtype=np.int64)))
    return extractor(batch)


def _probe(
    source: Any,
    indices: np.ndarray,
    extractor: Extractor,
    meta: StoreMeta,
    inputs: Sequence[str],
    size: int,
    first: dict,
):
    """Field specs from the first batch (``size`` samples); its outputs are reused by the build."""
    batch = collate([source[int(i)] for i in indices[:size]])
    with torch.no_grad():
        out = dict(_run(extractor, batch, indices[:size]))
    first.update(size=size, batch=batch, out=out)
    fields = {k: FieldSpec(list(v.shape[1:]), _logical(v, meta.dtype), "feature") for k, v in out.items()}
    for key in inputs:
        if key not in batch or not isinstance(batch[key], Tensor):
            raise StoreError(f"store_inputs names {key!r}, but source samples have tensors {sorted(batch)}.")
        v = batch[key]
        fields[key] = FieldSpec(list(v.shape[1:]), _logical(v, str(v.dtype)[6:]), "input")
    fields["sample_index"] = FieldSpec([], "int64", "index")
    return fields


def build_store(
    root: str | os.PathLike,
    source: Any,
    extractor: Extractor,
    meta: StoreMeta,
    *,
    batch_size: int = 32,
    indices: Sequence[int] | None = None,
    store_inputs: Sequence[str] = (),
    chunk_rows: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    queue_size: int = 2,
    progress: bool = True,
    desc: str = "cache build",
) -> dict:
    """Run ``extractor`` over ``source`` and write the results into the store at ``root``.

    ``source[i]`` gives one sample dict; ``extractor(batch)`` maps a collated batch to
    ``{field: Tensor (B, ...)}``; one with a true ``takes_indices`` attribute is called as
    ``extractor(batch, indices=...)`` with the samples' dataset indices. Re-running the same call
    resumes: chunks with a done marker are skipped. ``rank``/``world_size`` (default: env
    ``RANK``/``WORLD_SIZE``) split the chunks into disjoint contiguous blocks. Returns the
    manifest (``complete`` filled once all is done). ``desc`` labels the progress bar.
    """
    if batch_size < 1:
        raise StoreError(f"batch_size={batch_size}; expected >= 1.")
    env_rank, env_world = dist_env()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    root = Path(root)
    idx = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0:
        raise StoreError(f"store {str(root)!r}: the source/indices give {len(idx)} samples; expected >= 1.")

    first: dict[str, Any] = {}  # the probe's batch and outputs, handed from make() to the loop

    def make() -> tuple[dict, dict[str, FieldSpec]]:
        fields = _probe(source, idx, extractor, meta, store_inputs, min(batch_size, len(idx)), first)
        rows = chunk_rows or default_chunk_rows(fields, len(idx), batch_size)
        manifest = make_manifest(meta, fields, len(idx), rows, batch_size)
        manifest["sample_index"]["sha256"] = _index_hash(idx)
        return manifest, fields

    create_once(root, make)
    clean_stale_temps(root)
    manifest = read_manifest(root)
    _check_same_build(root, manifest, meta, idx, chunk_rows, store_inputs)
    fields = {k: FieldSpec(**v) for k, v in manifest["fields"].items()}
    checksum = {k: _checksummed(root, k) for k in fields}
    rows, n = manifest["chunk_rows"], manifest["num_samples"]
    mine = rank_chunks(num_chunks(n, rows), rank, world_size)
    done = done_chunks(root)
    pending = [c for c in mine if c not in done]
    total = sum(chunk_range(c, rows, n)[1] - chunk_range(c, rows, n)[0] for c in mine)
    writer = _Writer(root, queue_size, checksum)
    writer.start()
    bar = tqdm(
        total=total,
        initial=total - sum(min(rows, n - c * rows) for c in pending),
        unit="sample",
        desc=f"{desc} rank {rank}/{world_size}" if world_size > 1 else desc,
        disable=not progress,
    )
    try:
        for c in pending:
            start, stop = chunk_range(c, rows, n)
            bufs = {k: np.empty((rows, *f.shape), storage_dtype(f.dtype)) for k, f in fields.items()}
            for buf in bufs.values():
                buf[stop - start :] = 0  # the padding of a last, partial chunk (zarr's fill value)
            bufs["sample_index"][: stop - start] = idx[start:stop]
            for b0 in range(start, stop, batch_size):
                b1 = min(b0 + batch_size, stop)
                if b0 == 0 and first.get("size") == b1:  # the probe ran exactly this batch
                    batch, out = first.pop("batch"), first.pop("out")
                else:
                    batch = collate([source[int(i)] for i in idx[b0:b1]])
                    with torch.no_grad():
                        out = dict(_run(extractor, batch, idx[b0:b1]))
                out.update({k: batch[k] for k, f in fields.items() if f.role == "input"})
                for k, f in fields.items():
                    if f.role != "index":
                        bufs[k][b0 - start : b1 - start] = _checked(root, k, f, out, b1 - b0)
                bar.update(b1 - b0)
            writer.put((c, bufs))
    finally:
        first.clear()
        bar.close()
        writer.close()
    return finalize(root)


def _checked(root: Path, name: str, spec: FieldSpec, out: Mapping[str, Any], rows: int) -> np.ndarray:
    if name not in out:
        raise StoreError(f"store {str(root)!r}: field {name!r} is missing from the extractor output {sorted(out)}.")
    arr = to_storage(torch.as_tensor(out[name]), spec.dtype)
    if arr.shape != (rows, *spec.shape):
        raise StoreError(
            f"store {str(root)!r}: field {name!r} has batch shape {arr.shape}; expected {(rows, *spec.shape)} "
            "(the store's manifest). The extractor must give the same per-sample shape for every batch."
        )
    return arr


def _checksummed(root: Path, name: str) -> bool:
    """Whether field ``name``'s chunks carry a crc32c (resuming a pre-v3 store keeps its format)."""
    codecs = field_codecs(root, name)
    if codecs not in (CODECS, LEGACY_CODECS):
        raise StoreError(
            f"store {str(root)!r}: field {name!r} array has codecs {codecs}; expected {CODECS} (or "
            f"{LEGACY_CODECS} for stores written before schema 3). Use a new --out path, or delete the store."
        )
    return has_checksum(codecs)


def _check_same_build(
    root: Path, m: dict, meta: StoreMeta, idx: np.ndarray, chunk_rows: int | None, store_inputs: Sequence[str]
) -> None:
    """Resuming into a store made by a different build would mix results: refuse with the difference."""
    problems = []
    have = sorted(k for k, f in m["fields"].items() if f.get("role") == "input")
    if have != sorted(store_inputs):
        problems.append(f"store_inputs {have} vs {sorted(store_inputs)}")
    if m["num_samples"] != len(idx):
        problems.append(f"num_samples {m['num_samples']} vs {len(idx)}")
    if m["sample_index"].get("sha256") not in (None, _index_hash(idx)):
        problems.append("sample index mapping differs")
    if chunk_rows is not None and m["chunk_rows"] != chunk_rows:
        problems.append(f"chunk_rows {m['chunk_rows']} vs {chunk_rows}")
    new = meta.to_json()
    problems += [f"meta.{k} {m['meta'].get(k)!r} vs {v!r}" for k, v in new.items() if m["meta"].get(k) != v]
    if problems:
        raise StoreError(
            f"store {str(root)!r} exists but was built with different settings ({'; '.join(problems)}). "
            "Use a new --out path, or delete the store to rebuild it."
        )


def finalize(root: str | os.PathLike) -> dict:
    """Record the complete sample ranges in the manifest once every chunk is done."""
    m = read_manifest(root)
    done = done_chunks(root)
    if len(done) == num_chunks(m["num_samples"], m["chunk_rows"]):
        m["complete"] = ranges_of(done, m["chunk_rows"], m["num_samples"])
        write_manifest(root, m)
    return m
