"""Depth maps in a LeRobot v3.0 dataset, stored the way LeRobot itself stores raw depth images.

LeRobot (since its depth support, huggingface/lerobot PRs #3644 and #3899) flags a depth feature with
``info: {"is_depth_map": true, "depth_unit": "mm" | "m"}`` and names it after its camera with a ``_depth``
suffix (``observation.images.<camera>_depth``).  It stores depth either as a 12-bit log-quantised HEVC video
(no "invalid" value: codes clamp to ``depth_min``) or as raw ``image`` frames (TIFF, native dtype).  We write
the raw image kind: one uint16 TIFF per frame (deflate-compressed, lossless), millimetres, 0 = invalid, in
the data parquet like any ``image`` feature.  Quantisation: metres -> round to 1 mm, so a round trip is
within 0.5 mm; depths beyond 65.535 m clip to 65535 (the simulator's far plane is 4 m).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

DEPTH_UNIT = "mm"
UNITS = {"mm": 1e-3, "m": 1.0}  # stored unit -> metres per stored value
_UINT16_MAX = 65535


def depth_key(camera: str) -> str:
    """Feature name of ``camera``'s depth (LeRobot's ``<camera>_depth`` camera key)."""
    return f"observation.images.{camera}_depth"


def depth_camera(key: str) -> str:
    """Camera name of a depth feature: ``observation.images.side_depth`` -> ``side``."""
    return key.split(".")[-1].removesuffix("_depth")


def is_depth_feature(feature: dict) -> bool:
    """LeRobot's depth marker: ``info.is_depth_map``, or the legacy ``video.is_depth_map`` (in ``info`` or
    ``video_info``)."""
    info = feature.get("info") if isinstance(feature.get("info"), dict) else {}
    legacy = feature.get("video_info") if isinstance(feature.get("video_info"), dict) else {}
    return bool(info.get("is_depth_map") or info.get("video.is_depth_map") or legacy.get("video.is_depth_map"))


def depth_feature(height: int, width: int) -> dict:
    """``info.json`` entry of a depth feature as written here."""
    return {
        "dtype": "image",
        "shape": [height, width, 1],
        "names": ["height", "width", "channels"],
        "info": {"is_depth_map": True, "depth_unit": DEPTH_UNIT},
    }


def to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """Depth (..., H, W) float metres (0 = invalid) -> uint16 millimetres (0 = invalid)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(d * 1000.0), 0, _UINT16_MAX).astype(np.uint16)


def encode_depth(mm: np.ndarray) -> dict:
    """One (H, W) uint16 frame -> the ``{bytes, path}`` struct of an ``image`` cell (lossless TIFF)."""
    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(mm, dtype=np.uint16))  # mode "I;16"
    image.save(buf, format="TIFF", compression="tiff_adobe_deflate")
    return {"bytes": buf.getvalue(), "path": None}


def decode_depth(data: bytes, unit: str | None) -> np.ndarray:
    """Encoded depth image (TIFF or 16-bit PNG) in ``unit`` -> (H, W) float32 metres, 0 = invalid.

    ``unit`` None (a dataset without ``depth_unit``): inferred from the pixel type as LeRobot records it
    (floating point -> metres, integer -> millimetres)."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:  # (H, W, 1)
        arr = arr[..., 0]
    if unit is None:
        unit = "m" if np.issubdtype(arr.dtype, np.floating) else "mm"
    return (arr.astype(np.float64) * UNITS[unit]).astype(np.float32)


def depth_unit(feature: dict) -> str | None:
    """The feature's recorded ``depth_unit``, or None when absent (LeRobot then returns values as stored)."""
    info = feature.get("info") if isinstance(feature.get("info"), dict) else {}
    return info.get("depth_unit")
