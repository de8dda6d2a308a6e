"""Which store kind and field an alignment store uses, for each version of the ``align`` layout.

The layout is described by ``manifest.meta.extra["align"]`` (``version``, ``layout``, ``grid``,
``window``, ...). Version 2 (current) uses store kinds of its own:

- ``align extract`` (``layout`` ``frames`` / ``windows``): kind ``patch_grid``, ``patch_features [T, Hf, Wf, C]``;
- ``align ingest`` (``layout="points"``): kind ``point_cloud``, ``xyz [N, 3]``.

Version 1 (before the store had those kinds) rode on ``hidden_state``: ``teacher_hidden [1, T*Hf*Wf, C]``
(patches row-major, frame-major) and ``teacher_hidden [1, N, 3]``. The bytes of a row are the same in
both; only the kind, the field name and the per-row shape differ. Readers go through
:func:`feature_field`, :func:`as_grid` and :func:`as_xyz`, so both versions read back alike.

Importing this module registers the two kinds with the store (``policylens.align`` imports it),
so their manifests name ``policylens.align`` and any process that opens one imports it.
"""

from __future__ import annotations

import os

from torch import Tensor

from ..store import KINDS, read_manifest, register_store_kind

LAYOUT_VERSION = 2
_V2_KINDS = {"frames": "patch_grid", "windows": "patch_grid", "points": "point_cloud"}

register_store_kind(
    "patch_grid",
    field="patch_features",
    rank=4,
    description="patch_features [T, Hf, Wf, C]: T frames' patch grids (`align extract`)",
    module="policylens.align",
)
register_store_kind(
    "point_cloud",
    field="xyz",
    rank=2,
    description="xyz [N, 3]: one frame's points (`align ingest`)",
    module="policylens.align",
)


def store_kind(info: dict) -> str:
    """The store kind the layout ``info`` is written as."""
    return _V2_KINDS[info["layout"]] if int(info.get("version", 1)) >= 2 else "hidden_state"


def feature_field(info: dict) -> str:
    """The field that holds the patch features (``frames`` / ``windows``) or the xyz (``points``)."""
    return KINDS[store_kind(info)][0]


def align_info(path: str | os.PathLike) -> dict:
    """``meta.extra["align"]`` of the store at ``path``, checked: written by ``policylens align``, a
    layout version this policylens reads, and the store kind that version uses for that layout."""
    m = read_manifest(path)
    info = m["meta"].get("extra", {}).get("align")
    if not isinstance(info, dict) or "layout" not in info:
        raise ValueError(f"store {str(path)!r} was not written by `policylens align` (no meta.extra['align'])")
    version = int(info.get("version", 1))
    if version > LAYOUT_VERSION:
        raise ValueError(
            f"store {str(path)!r}: align layout version {version} is newer than this policylens reads "
            f"({LAYOUT_VERSION}); upgrade policylens (`pip install -U policylens`)"
        )
    if info["layout"] not in _V2_KINDS:
        raise ValueError(
            f"store {str(path)!r}: align layout {info['layout']!r} is unknown; expected one of {sorted(_V2_KINDS)}"
        )
    want = store_kind(info)
    if m["kind"] != want:
        raise ValueError(
            f"store {str(path)!r}: align layout {info['layout']!r} version {version} is written as kind {want!r}, "
            f"but the store is kind {m['kind']!r}; the manifest is inconsistent, re-extract / re-ingest it"
        )
    return info


def grid_problem(info: dict, shape: list[int], grid: tuple[int, int]) -> str | None:
    """Why a per-row feature ``shape`` does not hold ``window`` grids of ``grid`` (``None`` if it does)."""
    t, (hf, wf) = int(info["window"]), grid
    if int(info.get("version", 1)) >= 2:
        ok, want = list(shape[:3]) == [t, hf, wf] and len(shape) == 4, f"[{t}, {hf}, {wf}, C]"
    else:
        ok, want = len(shape) == 3 and shape[:2] == [1, t * hf * wf], f"[1, {t * hf * wf}, C]"
    if ok:
        return None
    return f"{feature_field(info)} has per-row shape {shape}; the layout (window {t}, grid {hf}x{wf}) needs {want}"


def as_grid(x: Tensor, window: int, grid: tuple[int, int]) -> Tensor:
    """Stored feature rows of either version -> ``(B, T, Hf, Wf, C)`` with ``T = window``: a window
    store's row is one item of ``T`` frames; a frame store's rows are single frames, ``T`` to an item."""
    hf, wf = grid
    return x.reshape(-1, window, hf, wf, x.shape[-1])


def as_xyz(x: Tensor) -> Tensor:
    """Stored point rows of either version (``(rows, N, 3)`` or ``(rows, 1, N, 3)``) -> ``(rows, N, 3)``."""
    if x.shape[-1] != 3:
        raise ValueError(f"point rows have shape {tuple(x.shape[1:])}; expected xyz [N, 3] (or [1, N, 3], version 1)")
    return x.reshape(len(x), -1, 3)
