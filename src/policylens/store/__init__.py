"""store: the on-disk feature store (zarr v3 arrays + JSON manifest) for anchor caches.

>>> meta = StoreMeta(kind="hidden_feature", model_id="tiny", taps=["llm.layers.-2.out"], layers=[-2])
>>> build_store("cache/", source, extractor, meta, batch_size=32)  # resumable, multi-rank
>>> # Ctrl-C / SIGTERM: raises BuildInterrupted (a KeyboardInterrupt) after keeping every computed sample
>>> ds = open_store("cache/")  # kind detected; ds[i] / ds[[i, j]] -> {field: Tensor}
>>> ds = open_store("cache/", check=True)  # each chunk's crc32c checked when first read
>>> verify_store("cache/").damaged  # [ChunkDamage(field, chunk, start, stop, file, problem), ...]
>>> for batch in infinite_batches(build_anchor_dataloader("cache/", batch_size=64)): ...
>>> register_store_kind("my_kind", field="my_field", rank=2, description="...", module="mypkg")  # a job's kind
"""

from ._chunks import ChunkDamage
from ._errors import StoreError
from ._interrupt import BuildInterrupted
from ._kinds import (
    KINDS,
    RECIPES,
    Recipe,
    StoreKind,
    recipe_hook,
    recipe_settings,
    register_recipe,
    register_store_kind,
)
from ._loader import build_anchor_dataloader, infinite_batches
from ._reader import FeatureStore, open_store
from ._schema import SCHEMA_VERSION, STORE_DTYPES, FieldSpec, StoreMeta, read_manifest
from ._sizing import default_chunk_rows
from ._verify import VerifyReport, store_info, verify_store
from ._writer import build_store, collate, rank_ranges

__all__ = [
    "KINDS",
    "RECIPES",
    "SCHEMA_VERSION",
    "STORE_DTYPES",
    "BuildInterrupted",
    "ChunkDamage",
    "FeatureStore",
    "FieldSpec",
    "Recipe",
    "StoreError",
    "StoreKind",
    "StoreMeta",
    "VerifyReport",
    "build_anchor_dataloader",
    "build_store",
    "collate",
    "default_chunk_rows",
    "infinite_batches",
    "open_store",
    "rank_ranges",
    "read_manifest",
    "recipe_hook",
    "recipe_settings",
    "register_recipe",
    "register_store_kind",
    "store_info",
    "verify_store",
]
