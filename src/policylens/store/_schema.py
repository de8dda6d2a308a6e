"""Manifest schema of the feature store: kinds, fields, dtypes, versioning and migration.

A store is a directory ``<root>/manifest.json`` + ``<root>/data/`` (zarr v3 group, one array
per field, shape ``(N, *field_shape)``, uncompressed, a crc32c per chunk) + ``<root>/done/``
(one marker per finished chunk). This module owns the JSON side; it never touches array data.

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

SCHEMA_VERSION = 3
MANIFEST = "manifest.json"

# kind -> (feature field, per-sample rank, description)
KINDS: dict[str, tuple[str, int, str]] = {
    "hidden_feature": ("target_features", 1, "target_features [D]: one pooled vector per sample"),
    "hidden_state": ("teacher_hidden", 3, "teacher_hidden [n_layers, n_vecs, D]"),
    "token_level": ("labels", 1, "labels [seq_len]"),
    "patch_grid": ("patch_features", 4, "patch_features [T, Hf, Wf, C]: T frames' patch grids (`align extract`)"),
    "point_cloud": ("xyz", 2, "xyz [N, 3]: one frame's points (`align ingest`)"),
}

# the dtypes feature fields are stored in (StoreMeta.dtype; `cache build` / `align extract --dtype`)
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


def kind_of_fields(names: list[str] | set[str] | dict) -> str | None:
    """Detect the cache kind from the field names present (``None`` if no kind matches).

    Given a manifest's ``{name: spec}``, only feature fields count (role ``feature``, the default),
    so a stored input that happens to share a kind's field name (``xyz``) does not confuse it."""
    if isinstance(names, dict):
        names = [k for k, v in names.items() if not isinstance(v, dict) or v.get("role", "feature") == "feature"]
    found = [k for k, (f, _, _) in KINDS.items() if f in names]
    return found[0] if len(found) == 1 else None


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


BRIDGE_POSITIONS = {"raw_positions": ("image", "vla_adapter"), "query_positions": ("action", "vla_adapter")}
BRIDGE_POOLINGS = ("mean", "first", "last")


@dataclass
class BridgeSpec:
    """CRaFT bridge features: C_R (``raw_layer`` at ``raw_positions``) ++ C_AQ (``query_layer``
    at ``query_positions``, at the first flow step), each pooled with ``pooling`` and
    concatenated into ``[D_llm + D_expert]``.

    Positions: ``image`` / ``action`` are the layout's image and action-query spans;
    ``vla_adapter`` is VLA-Adapter's convention, each span one position to the left (the
    slot before the first patch plus patches 0..P-2; the last prompt token plus queries
    0..Q-2). ``pooling``: ``mean``, ``first`` or ``last`` over those positions.
    ``noise_seed``: the flow noise of dataset sample ``i`` is drawn from a generator seeded
    ``noise_seed + i`` (``noise_per_sample``), so any batch of the same samples gets the same
    features; stores made before that drew one generator seeded ``noise_seed`` per batch
    (``noise_per_sample=False``). ``raw_layer`` defaults to ``n_layers // 2`` (:meth:`for_layers`).
    """

    raw_layer: int
    query_layer: int = -1
    raw_positions: str = "image"
    query_positions: str = "action"
    pooling: str = "mean"
    noise_seed: int = 0
    noise_per_sample: bool = False

    def __post_init__(self) -> None:
        for name, allowed in BRIDGE_POSITIONS.items():
            if getattr(self, name) not in allowed:
                raise StoreError(f"BridgeSpec.{name}={getattr(self, name)!r}; expected one of {list(allowed)}.")
        if self.pooling not in BRIDGE_POOLINGS:
            raise StoreError(f"BridgeSpec.pooling={self.pooling!r}; expected one of {list(BRIDGE_POOLINGS)}.")

    @classmethod
    def for_layers(cls, n_layers: int, **kwargs: Any) -> BridgeSpec:
        if n_layers < 1:
            raise StoreError(f"BridgeSpec.for_layers: n_layers={n_layers}; expected >= 1.")
        kwargs.setdefault("noise_per_sample", True)
        return cls(raw_layer=n_layers // 2, query_layer=n_layers - 1, **kwargs)


@dataclass
class StoreMeta:
    """Provenance recorded in the manifest: what produced the features and how.

    ``taps``: tap names captured (for ``hidden_state``, one per stored layer, in order).
    ``layers``: layer indices as the user gave them; ``pooling``; ``dtype`` of floating feature
    fields, one of :data:`STORE_DTYPES` (integer features such as labels keep their own).
    """

    kind: str
    model_id: str = "unknown"
    weights_hash: str = ""
    dataset_id: str = "unknown"
    taps: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    pooling: str = "none"
    dtype: str = "float16"
    bridge: BridgeSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StoreError(f"StoreMeta.kind={self.kind!r} is not a cache kind; expected one of {sorted(KINDS)}.")
        if self.dtype not in STORE_DTYPES:
            raise StoreError(
                f"StoreMeta.dtype={self.dtype!r} is not a dtype the store keeps features in; expected one of "
                f"{list(STORE_DTYPES)} (--dtype in the CLI)."
            )
        if isinstance(self.bridge, dict):
            self.bridge = BridgeSpec(**self.bridge)
        self.taps = [str(t) for t in self.taps]
        self.layers = [int(i) for i in self.layers]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["bridge"] = asdict(self.bridge) if self.bridge is not None else None
        return out


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
    meta.setdefault("bridge", None)
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
    if m.get("kind") not in KINDS:
        raise StoreError(
            f"{path}: field 'kind' is {m.get('kind')!r} and could not be detected from fields "
            f"{sorted(m.get('fields', {}))}; expected one of {sorted(KINDS)}."
        )
    return m


def write_manifest(root: str | os.PathLike, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temp file + rename), so readers never see half of it."""
    path = Path(root) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)
