"""Inspect and check a store: ``store_info`` (what it holds) and ``verify_store`` (is it sound).

``verify_store`` checks shapes, dtypes, chunk files, completeness, NaN/Inf, duplicate sample
ids and value statistics, and measures the cosine similarity of neighbouring samples (all
neighbours identical means the build wrote one batch over and over). With ``repair=True``
the done markers of damaged chunks are removed so that rerunning the build recomputes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._errors import StoreError
from ._layout import chunk_file, chunk_range, done_chunks, field_dir, marker, num_chunks, ranges_of
from ._schema import KINDS, FieldSpec, read_manifest, storage_dtype


def store_info(root: str | os.PathLike) -> dict[str, Any]:
    """Kind, sample count, fields, provenance and completeness of the store at ``root``."""
    m = read_manifest(root)
    n, rows = m["num_samples"], m["chunk_rows"]
    done = done_chunks(root)
    missing = set(range(num_chunks(n, rows))) - done
    return {
        "path": str(root),
        "schema_version": m["schema_version"],
        "kind": m["kind"],
        "num_samples": n,
        "chunk_rows": rows,
        "fields": m["fields"],
        "meta": m["meta"],
        "tool_version": m["tool_version"],
        "complete": ranges_of(done, rows, n),
        "missing": ranges_of(missing, rows, n),
    }


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_store`; ``ok`` is False when ``problems`` is not empty."""

    path: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    repaired: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _as_float(a: np.ndarray, logical: str) -> np.ndarray:
    if logical == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).float().numpy()
    return a.astype(np.float64)


def _check_array(root: Path, name: str, spec: FieldSpec, n: int, rows: int, rep: VerifyReport) -> bool:
    path = field_dir(root, name) / "zarr.json"
    if not path.is_file():
        rep.problems.append(f"field {name!r}: array metadata {path} is missing")
        return False
    z = json.loads(path.read_text())
    want_shape, want_dtype = [n, *spec.shape], storage_dtype(spec.dtype).name
    got_chunks = z["chunk_grid"]["configuration"]["chunk_shape"]
    if z["shape"] != want_shape or z["data_type"] != want_dtype or got_chunks != [rows, *spec.shape]:
        rep.problems.append(
            f"field {name!r}: array has shape {z['shape']}, dtype {z['data_type']}, chunks {got_chunks}; manifest "
            f"expects shape {want_shape}, dtype {want_dtype}, chunks {[rows, *spec.shape]}"
        )
        return False
    return True


def verify_store(root: str | os.PathLike, repair: bool = False) -> VerifyReport:
    """Check the store at ``root``; see the module docstring for what is checked."""
    root = Path(root)
    rep = VerifyReport(str(root))
    try:
        m = read_manifest(root)
    except StoreError as exc:
        rep.problems.append(str(exc))
        return rep
    n, rows = m["num_samples"], m["chunk_rows"]
    done = done_chunks(root)
    missing = set(range(num_chunks(n, rows))) - done
    if missing:
        rep.problems.append(f"incomplete: samples {ranges_of(missing, rows, n)} have no done marker")
    specs = {k: FieldSpec(**v) for k, v in m["fields"].items()}
    damaged: set[int] = set()
    for name, spec in specs.items():
        if not _check_array(root, name, spec, n, rows, rep):
            continue
        expect = rows * spec.row_bytes
        for c in sorted(done):
            f = chunk_file(root, name, c, 1 + len(spec.shape))
            size = f.stat().st_size if f.is_file() else None
            if size != expect:
                what = "missing" if size is None else f"{size} bytes, expected {expect}"
                rep.problems.append(f"field {name!r}: chunk file {f} is {what}")
                damaged.add(c)
    if repair:
        for c in sorted(damaged):
            marker(root, c).unlink(missing_ok=True)
        rep.repaired = sorted(damaged)
    good = sorted(done - damaged)
    feature = KINDS[m["kind"]][0]
    for name, spec in specs.items():
        if name not in m["fields"] or not good:
            continue
        _field_stats(root, name, spec, good, rows, n, rep, neighbours=name == feature)
    return rep


def _field_stats(root, name, spec, chunks, rows, n, rep, neighbours) -> None:
    """Stream chunk by chunk (constant memory): NaN/Inf, moments, neighbour similarity."""
    dtype = storage_dtype(spec.dtype)
    seen: list[np.ndarray] = []
    count = n_bad = n_pairs = n_same = 0
    total = total_sq = cos_sum = 0.0
    lo, hi, bad_rows, prev = np.inf, -np.inf, [], None
    for c in chunks:
        start, stop = chunk_range(c, rows, n)
        f = chunk_file(root, name, c, 1 + len(spec.shape))
        a = np.fromfile(f, dtype=dtype).reshape(rows, *spec.shape)[: stop - start]
        if spec.role == "index":
            seen.append(a)
            continue
        x = _as_float(a.astype(np.float64) if spec.dtype == "bool" else a, spec.dtype).reshape(len(a), -1)
        bad = ~np.isfinite(x)
        if bad.any():
            n_bad += int(bad.sum())
            bad_rows += (start + np.flatnonzero(bad.any(axis=1))).tolist()
        x = np.where(bad, 0.0, x)
        count, total, total_sq = count + x.size, total + float(x.sum()), total_sq + float((x * x).sum())
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        if neighbours:
            y = x if prev is None or prev[0] != start else np.concatenate([prev[1], x])
            u, v = y[:-1], y[1:]
            denom = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
            cos = np.divide((u * v).sum(1), denom, out=np.ones(len(u)), where=denom > 0)
            n_pairs, n_same, cos_sum = n_pairs + len(u), n_same + int((u == v).all(axis=1).sum()), cos_sum + cos.sum()
            prev = (stop, x[-1:])
    if spec.role == "index":
        ids = np.concatenate(seen)
        dup = len(ids) - len(np.unique(ids))
        if dup:
            rep.problems.append(f"field {name!r}: {dup} duplicate sample ids (overlapping writes?)")
        return
    if n_bad:
        rep.problems.append(f"field {name!r}: {n_bad} NaN/Inf values in samples {bad_rows[:10]}")
    mean = total / count
    st = {"mean": mean, "std": float(np.sqrt(max(total_sq / count - mean * mean, 0.0))), "min": lo, "max": hi}
    if n_pairs:
        same = n_same / n_pairs
        st.update(neighbour_cosine_mean=float(cos_sum / n_pairs), neighbour_identical_frac=same)
        if same == 1.0:
            rep.problems.append(f"field {name!r}: every sample equals its neighbour (one batch written repeatedly?)")
        elif same > 0.5:
            rep.warnings.append(f"field {name!r}: {same:.0%} of neighbouring samples are identical")
    rep.stats[name] = st
