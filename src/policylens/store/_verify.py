"""Inspect and check a store: ``store_info`` (what it holds) and ``verify_store`` (is it sound).

Both look at every field's chunk file of every finished chunk and report damage per field and
chunk with its sample range: a file missing, of the wrong size, or (``store_info(check=True)``,
always in ``verify_store``) whose crc32c no longer matches its data. ``verify_store`` also
checks shapes, dtypes and codecs against the manifest, completeness, NaN/Inf, duplicate sample
ids and value statistics (``_stats.py``), and that floating feature arrays are stored in the
manifest's dtype, one the store supports (``STORE_DTYPES``). With ``repair=True`` the done
markers of damaged chunks are removed so that rerunning the same build recomputes just those
chunks.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._chunks import CODECS, LEGACY_CODECS, ChunkDamage, field_codecs, scan_field
from ._errors import StoreError
from ._layout import done_chunks, field_dir, gaps, kept_ranges, marker, partial_chunks
from ._schema import KINDS, STORE_DTYPES, FieldSpec, read_manifest, storage_dtype, write_manifest
from ._stats import FieldStats

REBUILD = "rebuild the store into a new path (`policylens cache build ... --out NEW_PATH`)"
FLOATING = ("float16", "bfloat16", "float32", "float64")
NO_CHECKSUMS = (
    "fields {names} have no per-chunk checksums (the store was written before schema version 3): silent "
    "corruption cannot be detected. Rebuild it with this policylens (`policylens cache build ... --out NEW_PATH`)."
)


def store_info(root: str | os.PathLike, check: bool = True) -> dict[str, Any]:
    """Kind, sample count, fields, provenance, checksums and completeness of the store at ``root``.

    ``complete``: sample ranges that can be read (finished chunks, and the rows an interrupted
    build kept of an unfinished one); ``missing``: the others, because their chunk has no done
    marker or is damaged; ``damaged``: each damaged chunk file (field, chunk, samples, file, problem).
    ``check=True`` reads every chunk once to compare its crc32c; ``check=False`` only looks
    at file sizes (fast on big stores).
    """
    root = Path(root)
    m = read_manifest(root)
    n, rows = m["num_samples"], m["chunk_rows"]
    done = done_chunks(root)
    damaged: list[ChunkDamage] = []
    codecs = {}
    for name, raw in m["fields"].items():
        spec, codecs[name] = FieldSpec(**raw), field_codecs(root, name)
        scan = scan_field(root, name, spec, rows, n, sorted(done), codecs[name] == CODECS, read=check)
        damaged += [d for _, _, d in scan if d is not None]
    good = done - {d.chunk for d in damaged}
    kept = kept_ranges(good, partial_chunks(root), rows, n)
    return {
        "path": str(root),
        "schema_version": m["schema_version"],
        "kind": m["kind"],
        "num_samples": n,
        "chunk_rows": rows,
        "batch_size": m["batch_size"],
        "fields": m["fields"],
        "meta": m["meta"],
        "tool_version": m["tool_version"],
        "checksum": "crc32c" if all(c == CODECS for c in codecs.values()) else None,
        "complete": kept,
        "missing": gaps(kept, n),
        "damaged": [asdict(d) for d in damaged],
    }


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_store`; ``ok`` is False when ``problems`` is not empty.

    ``damaged``: each damaged chunk of each field (missing or wrong-size file, failed crc32c);
    ``incomplete``: sample ranges whose chunks have no done marker (not built yet);
    ``repaired``: the chunks whose done markers ``repair=True`` removed.
    """

    path: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    damaged: list[ChunkDamage] = field(default_factory=list)
    incomplete: list[list[int]] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_array(
    root: Path, name: str, spec: FieldSpec, n: int, rows: int, meta_dtype: str, rep: VerifyReport
) -> bool | None:
    """Whether field ``name``'s chunks carry a crc32c; ``None`` (and a problem) if its array is wrong."""
    path = field_dir(root, name) / "zarr.json"
    if not path.is_file():
        rep.problems.append(f"field {name!r}: array metadata {path} is missing; {REBUILD}")
        return None
    if spec.role == "feature" and spec.dtype in FLOATING and spec.dtype != meta_dtype:
        rep.problems.append(
            f"field {name!r}: the manifest's field dtype {spec.dtype} differs from the store's dtype (meta.dtype) "
            f"{meta_dtype}; the manifest is inconsistent, {REBUILD}"
        )
    z = json.loads(path.read_text())
    wrong = len(rep.problems)  # the array's own problems: its chunks cannot be read as the manifest says
    want = storage_dtype(spec.dtype).name
    if z["data_type"] != want:
        rep.problems.append(
            f"field {name!r}: array {path} has dtype {z['data_type']}, but the manifest says {spec.dtype} (stored as "
            f"{want}): the array was rewritten outside this store's build; {REBUILD}"
        )
    want_shape, got_chunks = [n, *spec.shape], z["chunk_grid"]["configuration"]["chunk_shape"]
    if z["shape"] != want_shape or got_chunks != [rows, *spec.shape]:
        rep.problems.append(
            f"field {name!r}: array {path} has shape {z['shape']}, chunks {got_chunks}; the manifest expects shape "
            f"{want_shape}, chunks {[rows, *spec.shape]}; {REBUILD}"
        )
    codecs = [c["name"] for c in z.get("codecs", [])]
    if codecs not in (CODECS, LEGACY_CODECS):
        rep.problems.append(f"field {name!r}: array has codecs {codecs}; expected {CODECS} (or {LEGACY_CODECS})")
    if len(rep.problems) > wrong:
        return None
    return codecs == CODECS


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
    rep.incomplete = gaps(kept_ranges(done, partial_chunks(root), rows, n), n)
    if rep.incomplete:
        rep.problems.append(f"incomplete: samples {rep.incomplete} have no done marker")
    meta_dtype = m["meta"].get("dtype")
    if meta_dtype not in STORE_DTYPES:
        rep.problems.append(
            f"manifest meta.dtype is {meta_dtype!r}, not a dtype the store keeps features in "
            f"({list(STORE_DTYPES)}); {REBUILD} with --dtype {STORE_DTYPES[0]} (or another of those)"
        )
    feature, unchecked = KINDS[m["kind"]][0], []
    for name, raw in m["fields"].items():
        spec = FieldSpec(**raw)
        checksummed = _check_array(root, name, spec, n, rows, meta_dtype, rep)
        if checksummed is None:
            continue
        if not checksummed:
            unchecked.append(name)
        stats = FieldStats(name, spec, neighbours=name == feature)
        for c, a, damage in scan_field(root, name, spec, rows, n, sorted(done), checksummed):
            if damage is not None:
                rep.damaged.append(damage)
                rep.problems.append(str(damage))
            else:
                stats.add(c * rows, a)
        st = stats.finish(rep.problems, rep.warnings)
        if st is not None:
            rep.stats[name] = st
    if unchecked:
        rep.warnings.append(NO_CHECKSUMS.format(names=unchecked))
    if repair and rep.damaged:
        rep.repaired = sorted({d.chunk for d in rep.damaged})
        for c in rep.repaired:
            marker(root, c).unlink(missing_ok=True)
        m["complete"] = []  # recorded again by the build that recomputes them
        write_manifest(root, m)
    return rep
