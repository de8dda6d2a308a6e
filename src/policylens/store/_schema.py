"""Manifest schema of the feature store: fields, dtypes, provenance, versioning and migration.

A store is a directory ``<root>/manifest.json`` + ``<root>/data/`` (zarr v3 group, one array
per field, shape ``(N, *field_shape)``, uncompressed, a crc32c per chunk) + ``<root>/done/``
(one marker per finished chunk). This module owns the JSON side; it never touches array data.
What kinds and recipes exist is registered in ``_kinds``; a manifest names the packages that
registered its kind and recipe (``modules``), and reading it imports them.

Versions: 1 (pre-release), 2 (no per-chunk checksums), 3 (crc32c per chunk, ``batch_size``).
Older manifests are upgraded in memory on read; a v2 store's chunks keep having no checksum
(its arrays' ``zarr.json`` says so), which the reader and ``verify`` report.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import StoreError
from ._kinds import KINDS, RECIPES, kind_of_fields, manifest_modules, resolve_kind

SCHEMA_VERSION = 3
MANIFEST = "manifest.json"

# the dtypes feature fields are stored in (StoreMeta.dtype; the CLI's --dtype choices)
STORE_DTYPES = ("float16", "bfloat16", "float32")

# logical dtype -> numpy storage dtype (zarr has no bfloat16: stored as its uint16 bit pattern)
DTYPES: dict[str, str] = {
    "float16": "float16",
    "bfloat16": "uint16",
    "float32": "float32",
    "float64": "float64",
    "int64": "int64",
    "int32": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}


def storage_dtype(logical: str, where: str = "dtype") -> np.dtype:
    """NumPy dtype used on disk for a logical dtype name (``bfloat16`` -> ``uint16``)."""
    if logical not in DTYPES:
        raise StoreError(f"{where}={logical!r} is not a supported dtype; expected one of {sorted(DTYPES)}.")
    return np.dtype(DTYPES[logical])


@dataclass
class FieldSpec:
    """One stored array: per-sample ``shape``, logical ``dtype``, ``role`` (feature/input/index)."""

    shape: list[int]
    dtype: str
    role: str = "feature"

    def __post_init__(self) -> None:
        self.shape = [int(s) for s in self.shape]
        storage_dtype(self.dtype, "FieldSpec.dtype")
        if self.role not in ("feature", "input", "index"):
            raise StoreError(f"FieldSpec.role={self.role!r}; expected 'feature', 'input' or 'index'.")
        if any(s <= 0 for s in self.shape):
            raise StoreError(f"FieldSpec.shape={self.shape} has a non-positive size; expected sizes >= 1.")

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * storage_dtype(self.dtype).itemsize


@dataclass
class StoreMeta:
    """Provenance recorded in the manifest: what produced the features and how.

    ``taps``: tap names captured (for ``hidden_state``, one per stored layer, in order).
    ``layers``: layer indices as the user gave them; ``pooling``; ``dtype`` of floating feature
    fields, one of :data:`STORE_DTYPES` (integer features such as labels keep their own).
    ``recipe``: ``{name: settings}`` of a registered recipe that computed the features (see
    :func:`register_recipe`); the settings are the recipe's own JSON, written as ``meta[name]``.
    ``extra``: anything else the writer wants to keep (JSON).
    """

    kind: str
    model_id: str = "unknown"
    weights_hash: str = ""
    dataset_id: str = "unknown"
    taps: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    pooling: str = "none"
    dtype: str = "float16"
    recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StoreError(
                f"StoreMeta.kind={self.kind!r} is not a store kind; expected one of {sorted(KINDS)} (a job's kinds "
                "are registered when its package is imported)."
            )
        if self.dtype not in STORE_DTYPES:
            raise StoreError(
                f"StoreMeta.dtype={self.dtype!r} is not a dtype the store keeps features in; expected one of "
                f"{list(STORE_DTYPES)} (--dtype in the CLI)."
            )
        for name, settings in self.recipe.items():
            if name in self.__dataclass_fields__ or not isinstance(settings, dict):
                raise StoreError(f"StoreMeta.recipe[{name!r}] must be a dict of settings under a name of its own.")
            if name not in RECIPES:
                raise StoreError(
                    f"StoreMeta.recipe names {name!r}, which no imported module registers; registered recipes: "
                    f"{sorted(RECIPES)}. Import the package that defines it (it calls register_recipe)."
                )
            if RECIPES[name].kind != self.kind:
                raise StoreError(
                    f"StoreMeta.recipe {name!r} writes kind={RECIPES[name].kind!r} stores, not kind={self.kind!r}."
                )
        self.taps = [str(t) for t in self.taps]
        self.layers = [int(i) for i in self.layers]

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``meta``: the fields, each recipe's settings under its name."""
        out = asdict(self)
        return {**out.pop("recipe"), **out}


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("policylens")
    except Exception:  # not installed (source checkout)
        return "0+unknown"


def make_manifest(
    meta: StoreMeta, fields: dict[str, FieldSpec], num_samples: int, chunk_rows: int, batch_size: int | None = None
) -> dict:
    """The manifest dict for a new store (``complete`` is filled in when the build finishes).

    ``batch_size``: that of the build that creates the store, recorded so that a repair can
    name the exact command that recomputes damaged chunks with the same batches."""
    feature = KINDS[meta.kind][0]
    if feature not in fields:
        raise StoreError(
            f"kind={meta.kind!r} needs a field {feature!r} ({KINDS[meta.kind][2]}); the extractor gave "
            f"{sorted(fields)}. Return {feature!r} from the extractor or pick the matching kind."
        )
    rank = KINDS[meta.kind][1]
    if len(fields[feature].shape) != rank:
        raise StoreError(
            f"field {feature!r} has per-sample shape {fields[feature].shape}; kind={meta.kind!r} expects "
            f"{KINDS[meta.kind][2]} (rank {rank})."
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "policylens.store",
        "kind": meta.kind,
        "tool_version": tool_version(),
        "num_samples": int(num_samples),
        "chunk_rows": int(chunk_rows),
        "batch_size": None if batch_size is None else int(batch_size),
        "fields": {k: asdict(v) for k, v in fields.items()},
        "modules": manifest_modules(meta.kind, meta.recipe),
        "meta": meta.to_json(),
        "sample_index": {"field": "sample_index", "dataset_id": meta.dataset_id},
        "complete": [],
    }


def _migrate_v1(m: dict) -> dict:
    """v1 (pre-release) had no ``kind``, no ``sample_index`` field and a flat ``meta``."""
    m = dict(m)
    m.setdefault("kind", kind_of_fields(m.get("fields", {})))
    m.setdefault("format", "policylens.store")
    m.setdefault("tool_version", "0.0")
    meta = dict(m.get("meta", {}))
    meta.setdefault("kind", m["kind"])
    meta.setdefault("extra", {})
    m["meta"] = meta
    m.setdefault("sample_index", {"field": None, "dataset_id": meta.get("dataset_id", "unknown")})
    m.setdefault("complete", [])
    for spec in m.get("fields", {}).values():
        spec.setdefault("role", "feature")
    m["schema_version"] = 2
    return m


def _migrate_v2(m: dict) -> dict:
    """v2 had no per-chunk checksums (read from each array's codecs) and no ``batch_size``."""
    m = dict(m)
    m.setdefault("batch_size", None)
    m["schema_version"] = 3
    return m


MIGRATIONS = {1: _migrate_v1, 2: _migrate_v2}


def read_manifest(root: str | os.PathLike) -> dict:
    """Load and validate ``manifest.json``; older schema versions are upgraded in memory."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        hint = " (the directory does not exist)" if not Path(root).exists() else ""
        raise StoreError(
            f"No {MANIFEST} in store {str(root)!r}{hint}: this is not a policylens feature store, or its "
            f"build never got past creation. Build one with `policylens cache build ... --out {root}`."
        )
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path} is not valid JSON ({exc}); restore it or rebuild the store.") from exc
    version = m.get("schema_version")
    if not isinstance(version, int):
        raise StoreError(f"{path}: field 'schema_version' is {version!r}; expected an integer.")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema_version={version} is newer than this policylens supports ({SCHEMA_VERSION}). "
            "Upgrade policylens (`pip install -U policylens`) to read it."
        )
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise StoreError(
                f"{path}: schema_version={version} cannot be opened by this policylens (supports "
                f"{sorted(MIGRATIONS)} and {SCHEMA_VERSION}). Migrate it by rebuilding: "
                f"`policylens cache build ... --out NEW_PATH`."
            )
        m = MIGRATIONS[version](m)
        version = m["schema_version"]
    resolve_kind(m, str(path))  # imports the package that registered the kind, if the manifest names one
    return m


def write_manifest(root: str | os.PathLike, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temp file + rename), so readers never see half of it."""
    path = Path(root) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)
