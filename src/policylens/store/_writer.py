"""Build a feature store from a source and an extractor: chunked, resumable, multi-rank.

The main thread runs the extractor (the model forward) batch by batch; a writer thread
takes finished chunks from a bounded queue, writes each field's chunk file as zarr's
``bytes`` + ``crc32c`` codecs store it (data, then its checksum) and then the chunk's done
marker, so disk I/O overlaps with compute and a kill leaves only unmarked chunks. SIGINT /
SIGTERM stop the run keeping every batch it computed (``_interrupt``); chunk sizes come from
``_sizing``.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._chunks import CODECS, LEGACY_CODECS, field_codecs, has_checksum, write_chunk
from ._create import clean_stale_temps, create_once
from ._errors import StoreError
from ._interrupt import BuildInterrupted, kept_samples, restore_partial, save_partial, signals_interrupt
from ._layout import (
    chunk_file,
    chunk_range,
    dist_env,
    done_chunks,
    mark_done,
    marker,
    num_chunks,
    part_marker,
    ranges_of,
    rank_chunks,
)
from ._schema import FieldSpec, StoreMeta, make_manifest, read_manifest, storage_dtype, write_manifest
from ._sizing import default_chunk_rows

Extractor = Callable[[dict[str, Any]], Mapping[str, Tensor]]


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
                part_marker(self.root, chunk).unlink(missing_ok=True)  # rows an interrupt kept: now all done
            except BaseException as exc:  # surfaced in put()/close()
                self.error = exc

    def put(self, item: tuple) -> None:
        self._check()
        self.q.put(item)

    def close(self) -> None:
        """Write every queued chunk, then stop (again: no-op)."""
        if self.is_alive():
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
        rows = chunk_rows or default_chunk_rows(fields, len(idx), batch_size, world_size)
        manifest = make_manifest(meta, fields, len(idx), rows, batch_size)
        manifest["sample_index"]["sha256"] = _index_hash(idx)
        return manifest, fields

    with signals_interrupt() as caught:
        try:
            create_once(root, make)
            clean_stale_temps(root)
            manifest = read_manifest(root)
            _check_same_build(root, manifest, meta, idx, chunk_rows, store_inputs)
            run = _Run(root, source, extractor, idx, manifest, batch_size, first)
            mine = rank_chunks(num_chunks(run.n, run.rows), rank, world_size)
            label = f"{desc} rank {rank}/{world_size}" if world_size > 1 else desc
            run.write(mine, queue_size, tqdm(total=run.size(mine), unit="sample", desc=label, disable=not progress))
        except KeyboardInterrupt:
            kept, total = kept_samples(root, len(idx))
            raise BuildInterrupted(root, kept, total, caught.signum or signal.SIGINT) from None
        finally:
            first.clear()
    return finalize(root)


class _Run:
    """One build's pass over its chunks: compute each pending chunk batch by batch, hand it to the
    writer; on an interrupt, write what the unfinished chunk holds (see ``_interrupt``)."""

    def __init__(
        self,
        root: Path,
        source: Any,
        extractor: Extractor,
        idx: np.ndarray,
        manifest: dict,
        batch_size: int,
        first: dict,
    ) -> None:
        self.root, self.source, self.extractor, self.idx = root, source, extractor, idx
        self.batch_size, self.first = batch_size, first
        self.fields = {k: FieldSpec(**v) for k, v in manifest["fields"].items()}
        self.checksum = {k: _checksummed(root, k) for k in self.fields}
        self.rows, self.n = manifest["chunk_rows"], manifest["num_samples"]

    def size(self, chunks: Iterable[int]) -> int:
        """Samples in ``chunks``."""
        return sum(min(self.rows, self.n - c * self.rows) for c in chunks)

    def write(self, mine: range, queue_size: int, bar: tqdm) -> None:
        done = done_chunks(self.root)
        pending = [c for c in mine if c not in done]
        bar.update(self.size(c for c in mine if c in done))
        writer = _Writer(self.root, queue_size, self.checksum)
        writer.start()
        current: list = []  # [chunk, bufs, rows computed] of the chunk being filled
        try:
            for c in pending:
                current[:] = [c, self._buffers(c), 0]
                self._fill(current, bar)
                writer.put((c, current[1]))
                current.clear()
        except KeyboardInterrupt:
            writer.close()  # every finished chunk handed over is written first
            c, bufs, kept = current or (None, None, 0)
            if kept and not marker(self.root, c).exists():
                save_partial(self.root, c, bufs, kept, self.checksum)
            raise
        finally:
            bar.close()
            writer.close()

    def _buffers(self, c: int) -> dict[str, np.ndarray]:
        start, stop = chunk_range(c, self.rows, self.n)
        bufs = {k: np.zeros((self.rows, *f.shape), storage_dtype(f.dtype)) for k, f in self.fields.items()}
        bufs["sample_index"][: stop - start] = self.idx[start:stop]  # the padding of a last chunk stays 0
        return bufs

    def _fill(self, current: list, bar: tqdm) -> None:
        """Compute chunk ``current[0]`` into ``current[1]``, keeping ``current[2]`` = rows done."""
        c, bufs, _ = current
        start, stop = chunk_range(c, self.rows, self.n)
        current[2] = restore_partial(self.root, c, self.fields, bufs, self.idx[start:stop], self.checksum)
        bar.update(current[2])
        for b0 in range(start + current[2], stop, self.batch_size):
            b1 = min(b0 + self.batch_size, stop)
            if b0 == 0 and self.first.get("size") == b1:  # the probe ran exactly this batch
                batch, out = self.first.pop("batch"), self.first.pop("out")
            else:
                batch = collate([self.source[int(i)] for i in self.idx[b0:b1]])
                with torch.no_grad():
                    out = dict(_run(self.extractor, batch, self.idx[b0:b1]))
            out.update({k: batch[k] for k, f in self.fields.items() if f.role == "input"})
            for k, f in self.fields.items():
                if f.role != "index":
                    bufs[k][b0 - start : b1 - start] = _checked(self.root, k, f, out, b1 - b0)
            current[2] = b1 - start
            bar.update(b1 - b0)


def rank_ranges(manifest: Mapping[str, Any], rank: int, world_size: int) -> list[list[int]]:
    """The sample ranges ``[[start, stop], ...]`` that rank ``rank`` of ``world_size`` computes in the
    store of ``manifest`` (its contiguous block of chunks; empty when there are fewer chunks than ranks)."""
    rows, n = manifest["chunk_rows"], manifest["num_samples"]
    return ranges_of(set(rank_chunks(num_chunks(n, rows), rank, world_size)), rows, n)


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
