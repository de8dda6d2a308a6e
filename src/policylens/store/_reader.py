"""Read a feature store: ``open_store(path)`` -> a ``torch.utils.data.Dataset`` with fast random access.

Chunks are uncompressed zarr v3 chunk files, so each is a plain C-order array on disk: the
reader memory-maps them (lazily, per process, copy-on-write) with NumPy and indexes rows
directly. A single-row read costs microseconds instead of a zarr call's ~0.5 ms;
``ds[list_of_ids]`` reads a whole batch in one call. ``copy=False`` returns views of the map
(zero-copy; in-place edits stay private to the process but persist in its cache);
``in_memory=True`` loads every field into RAM instead.

Each chunk file ends with the crc32c of its data (zarr's ``crc32c`` codec), which the map
leaves out. ``check=True`` compares it the first time a process maps the chunk (one pass
over the chunk's bytes, then free while the map is cached), so a damaged chunk raises
instead of returning wrong values; the default trusts the files, as ``np.memmap`` would.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._chunks import CODECS, LEGACY_CODECS, ChunkDamage, checksum_problem, file_bytes, size_problem
from ._errors import StoreError
from ._kinds import KINDS, kind_of_fields
from ._layout import chunk_file, chunk_range, done_chunks, field_dir, gaps, kept_ranges, num_chunks, partial_chunks
from ._schema import FieldSpec, read_manifest, storage_dtype

MAX_OPEN_CHUNKS = 512


class FeatureStore(Dataset):
    """A store opened for reading; ``ds[i]`` -> ``{field: Tensor}``, ``ds[[i, j, ...]]`` -> batch dict.

    ``kind``: fail unless the store holds this kind. ``taps``: tap names that must be in the
    store; for ``hidden_state`` they also select (and order) the layers of ``teacher_hidden``.
    ``fields``: read only these. ``in_memory``: load into RAM. ``copy=False``: single-sample
    reads return views of the memory map. ``allow_incomplete``: open a store still being built
    or interrupted (its finished samples, those an interrupt kept included, read as usual;
    reading an unfinished one raises). ``check``: verify each chunk's crc32c when it is
    first read and raise :class:`StoreError` naming the field, chunk and samples if it fails.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        kind: str | None = None,
        taps: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        in_memory: bool = False,
        copy: bool = True,
        allow_incomplete: bool = False,
        check: bool = False,
    ) -> None:
        self.root = Path(root)
        self.manifest = m = read_manifest(self.root)
        self.kind: str = m["kind"]
        detected = kind_of_fields(m["fields"])
        if detected != self.kind:
            raise StoreError(
                f"store {str(root)!r}: manifest says kind={self.kind!r} but its fields {sorted(m['fields'])} "
                f"look like kind={detected!r}; the manifest is inconsistent, rebuild the store."
            )
        if kind is not None and kind != self.kind:
            raise StoreError(
                f"store {str(root)!r} holds kind={self.kind!r} ({KINDS[self.kind][2]}); kind={kind!r} was "
                f"asked for. Open it without kind= (the kind is detected), or point to a {kind!r} store."
            )
        self.specs = {k: FieldSpec(**v) for k, v in m["fields"].items()}
        self._row_bytes = {k: spec.row_bytes for k, spec in self.specs.items()}
        names = list(self.specs) if fields is None else list(fields)
        for name in names:
            if name not in self.specs:
                raise StoreError(
                    f"store {str(root)!r} has no field {name!r}; it has {sorted(self.specs)}. Pass one of those."
                )
        self.fields = names
        self.rows, self.n = int(m["chunk_rows"]), int(m["num_samples"])
        self._layers = self._select_taps(taps)
        self.done = done_chunks(self.root)
        self.partial: dict[int, int] = {}  # chunk -> rows an interrupted build kept (allow_incomplete only)
        if len(self.done) < num_chunks(self.n, self.rows):
            self.partial = partial_chunks(self.root)
            if not allow_incomplete:
                missing = gaps(kept_ranges(self.done, self.partial, self.rows, self.n), self.n)
                raise StoreError(
                    f"store {str(root)!r} is incomplete: samples {missing} have no done marker (build "
                    "interrupted?). Rerun the same `policylens cache build` command to finish it, or open with "
                    "allow_incomplete=True."
                )
        self._checksum = self._check_files()  # field -> its chunk files end with a crc32c
        if check and not all(self._checksum.values()):
            raise StoreError(
                f"store {str(root)!r}: check=True, but fields "
                f"{sorted(k for k, v in self._checksum.items() if not v)} have no per-chunk checksums (the store "
                "was written before schema version 3), so damage cannot be detected. Open it with check=False, "
                "or rebuild it with this policylens (`policylens cache build ... --out NEW_PATH`) to get checksums."
            )
        self.in_memory, self.copy, self.check = in_memory, copy, check
        self._plain = {
            k: self.specs[k].dtype != "bfloat16" and not (self._layers is not None and k == "teacher_hidden")
            for k in self.fields
        }
        self._maps: dict[tuple[str, int], np.ndarray] | None = None  # (field, chunk) -> (rows, *shape)
        self._ram: dict[str, np.ndarray] | None = None  # field -> (N, *shape)

    @property
    def meta(self) -> dict[str, Any]:
        """The manifest's provenance (taps, layers, pooling, dtype, model, dataset, recipe settings) plus kind."""
        meta = dict(self.manifest["meta"])
        meta["kind"] = self.kind
        if self._layers is not None:
            meta["taps"] = [meta["taps"][i] for i in self._layers]
            meta["layers"] = [meta["layers"][i] for i in self._layers] if meta["layers"] else []
        return meta

    def _select_taps(self, taps: Sequence[str] | None) -> list[int] | None:
        if taps is None:
            return None
        have = self.manifest["meta"]["taps"]
        for t in taps:
            if t not in have:
                raise StoreError(f"store {str(self.root)!r} has no tap {t!r}; its taps are {have}. Pass one of those.")
        return [have.index(t) for t in taps] if self.kind == "hidden_state" else None

    def _check_files(self) -> dict[str, bool]:
        """Codecs, chunk grid and file sizes of the fields read; returns which carry checksums."""
        checksum = {}
        for name in self.fields:
            spec = self.specs[name]
            meta_file = field_dir(self.root, name) / "zarr.json"
            if not meta_file.is_file():
                raise StoreError(f"store {str(self.root)!r}: field {name!r} has no array ({meta_file} missing).")
            zmeta = json.loads(meta_file.read_text())
            codecs = [c["name"] for c in zmeta.get("codecs", [])]
            grid = zmeta["chunk_grid"]["configuration"]["chunk_shape"]
            if codecs not in (CODECS, LEGACY_CODECS) or grid[0] != self.rows:
                raise StoreError(
                    f"store {str(self.root)!r}: field {name!r} array has codecs {codecs} and chunks {grid}; "
                    f"expected uncompressed {CODECS} (or {LEGACY_CODECS} before schema 3) with {self.rows} rows "
                    "per chunk, as the manifest says. Rebuild the store with policylens."
                )
            checksum[name] = codecs == CODECS
            expect = file_bytes(self.rows, spec.row_bytes, checksum[name])
            for c in sorted(self.done | set(self.partial)):
                path = chunk_file(self.root, name, c, 1 + len(spec.shape))
                problem = size_problem(path, expect)
                if problem is not None:
                    raise StoreError(
                        f"store {str(self.root)!r}: {self._damage(name, c, problem)}. Run "
                        f"`policylens cache verify --repair {self.root}` and rerun the build it names to recompute it."
                    )
        return checksum

    def _damage(self, name: str, c: int, problem: str) -> ChunkDamage:
        start, stop = chunk_range(c, self.rows, self.n)
        path = chunk_file(self.root, name, c, 1 + len(self.specs[name].shape))
        return ChunkDamage(name, c, start, stop, str(path), problem)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:  # handles are reopened lazily in each (spawned) worker
        state = dict(self.__dict__)
        state["_maps"], state["_ram"] = None, None
        return state

    def _chunk(self, name: str, c: int) -> np.ndarray:
        """Chunk ``c`` of ``name`` as an array ``(chunk_rows, *shape)`` over a memory map of its file."""
        if self._maps is None:
            self._maps = {}
        a = self._maps.get((name, c))
        if a is not None:
            return a
        if c not in self.done and c not in self.partial:
            self._unfinished(c, 0)
        spec = self.specs[name]
        with open(chunk_file(self.root, name, c, 1 + len(spec.shape)), "rb") as f:
            # private copy-on-write map: arrays over it are writable and never write the file
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        if self.check:
            end = self.rows * spec.row_bytes
            problem = checksum_problem(mm[:end], mm[end:])
            if problem is not None:
                raise StoreError(
                    f"store {str(self.root)!r}: {self._damage(name, c, problem)}. Run "
                    f"`policylens cache verify --repair {self.root}` and rerun the build it names to recompute it."
                )
        count = self.rows * spec.row_bytes // storage_dtype(spec.dtype).itemsize  # the crc32c after it is left out
        a = np.frombuffer(mm, dtype=storage_dtype(spec.dtype), count=count).reshape(self.rows, *spec.shape)
        if len(self._maps) >= MAX_OPEN_CHUNKS:  # bound open maps (each holds a file descriptor)
            self._maps.pop(next(iter(self._maps)))
        self._maps[(name, c)] = a
        return a

    def _unfinished(self, c: int, offset: int) -> None:
        start, stop = chunk_range(c, self.rows, self.n)
        raise StoreError(
            f"store {str(self.root)!r}: samples {[start + offset, stop]} are not complete (no done marker); "
            "rerun the build command to finish them."
        )

    def _load_ram(self) -> dict[str, np.ndarray]:
        chunks = range(num_chunks(self.n, self.rows))
        self._ram = {k: np.concatenate([self._chunk(k, c) for c in chunks])[: self.n] for k in self.fields}
        self._maps = None
        return self._ram

    def _tensor(self, name: str, a: np.ndarray, batched: bool, copy: bool) -> torch.Tensor:
        # NumPy does the copies: single-threaded memcpy, no torch thread-pool wake-ups per row
        if self._layers is not None and name == "teacher_hidden":
            a = np.take(a, self._layers, axis=1 if batched else 0)
        elif copy:
            a = np.array(a)
        t = torch.from_numpy(np.asarray(a))
        return t.view(torch.bfloat16) if self.specs[name].dtype == "bfloat16" else t

    def __getitem__(self, i: Any) -> dict[str, torch.Tensor]:
        if not isinstance(i, int | np.integer):
            return self.get_batch(i)
        i = int(i)
        if not 0 <= i < self.n:
            if not -self.n <= i < 0:
                raise IndexError(f"sample index {i} out of range for store {str(self.root)!r} with {self.n} samples.")
            i += self.n
        c, o = divmod(i, self.rows)
        if self.partial and self.partial.get(c, self.rows) <= o:
            self._unfinished(c, self.partial[c])
        if self.in_memory:
            ram = self._ram or self._load_ram()
            return {k: self._tensor(k, ram[k][i], False, self.copy) for k in self.fields}
        maps, out = self._maps or {}, {}
        for k in self.fields:
            a = maps.get((k, c))
            a = (a if a is not None else self._chunk(k, c))[o]
            if self._plain[k]:  # hot path: no tap selection, no bfloat16 view
                out[k] = torch.from_numpy(np.array(a) if self.copy else np.asarray(a))
            else:
                out[k] = self._tensor(k, a, False, self.copy)
        return out

    def get_batch(self, indices: Sequence[int] | np.ndarray | slice) -> dict[str, torch.Tensor]:
        """Rows ``indices`` of every field, stacked: ``{field: Tensor (B, ...)}`` in one call (a copy)."""
        if isinstance(indices, slice):
            idx = np.arange(self.n)[indices]
        else:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"sample indices out of range for store {str(self.root)!r} with {self.n} samples.")
        idx = idx % self.n
        chunks, offs = np.divmod(idx, self.rows)
        for c, kept in self.partial.items():
            if (offs[chunks == c] >= kept).any():
                self._unfinished(c, kept)
        if self.in_memory:
            ram = self._ram or self._load_ram()
            return {k: self._tensor(k, ram[k][idx], True, False) for k in self.fields}
        order = np.argsort(chunks, kind="stable")
        uniq, starts = np.unique(chunks[order], return_index=True)
        spans = list(zip(uniq.tolist(), starts.tolist(), [*starts[1:].tolist(), len(idx)], strict=True))
        by_chunk = offs[order]  # the offsets grouped by chunk
        out = {}
        for k in self.fields:
            spec = self.specs[k]
            if len(uniq) == 1:
                out[k] = self._tensor(k, self._chunk(k, int(uniq[0]))[offs], True, False)
                continue
            res = np.empty((len(idx), *spec.shape), storage_dtype(spec.dtype))
            if self._row_bytes[k] >= 1 << 16:  # big rows: one copy per row, no temporary
                for j, (c, o) in enumerate(zip(chunks.tolist(), offs.tolist(), strict=True)):
                    res[j] = self._chunk(k, c)[o]
            else:  # small rows: one gather per chunk into chunk order, then one scatter back
                grouped = np.empty_like(res)
                for u, a, b in spans:
                    self._chunk(k, u).take(by_chunk[a:b], axis=0, out=grouped[a:b])
                res[order] = grouped
            out[k] = self._tensor(k, res, True, False)
        return out


def open_store(root: str | os.PathLike, **kwargs: Any) -> FeatureStore:
    """Open the store at ``root`` (kind detected); keyword options as :class:`FeatureStore`."""
    return FeatureStore(root, **kwargs)
