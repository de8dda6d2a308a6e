"""Pixel uv -> patch grid -> feature: the exact lookup of a point's patch feature.

Conventions (the OpenCV ones of ``sim.pybullet`` / ``data.pointcloud``): pixel ``(u, v)`` =
(column, row) has its centre at integer coordinates; the frame spans ``[-0.5, W - 0.5)``.
Grid coordinates use the same rule one level up: patch ``(r, c)`` has its centre at
``(x, y) = (c, r)`` and covers ``[c - 0.5, c + 0.5)``, so ``gx = (x_in + 0.5) / patch - 0.5``
for input pixel ``x_in`` and the patch index is ``floor(gx + 0.5)``. That is exactly the
``align_corners=False`` convention of :func:`torch.nn.functional.grid_sample`, whose normalised
coordinate is ``(gx + 0.5) / cols * 2 - 1``.

A point is *valid* when it lies inside the frame crop, on resized content of the input (not on a
padding bar, not cut off by a crop after the resize) and on the patch grid (not in a remainder
the patch embedding dropped). Invalid points get zero features and ``valid = False``: never a
border-padded value from the nearest patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from ._record import PreprocessRecord

__all__ = ["GridPoints", "grid_to_uv", "sample_features", "uv_to_grid"]


@dataclass(frozen=True)
class GridPoints:
    """N points on a record's patch grid.

    ``xy`` (N, 2) float64 continuous grid coordinates (x = column, y = row; patch centres at
    integers); ``index`` (N,) long row-major patch index (-1 where invalid); ``valid`` (N,) bool.
    """

    xy: Tensor
    index: Tensor
    valid: Tensor
    record: PreprocessRecord


def _check_uv(uv, what: str) -> Tensor:
    uv = torch.as_tensor(uv)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"{what}: uv must be (N, 2) pixel (u, v) = (column, row), got shape {tuple(uv.shape)}")
    return uv.double()


def uv_to_grid(uv, record: PreprocessRecord) -> GridPoints:
    """``uv`` (N, 2) frame pixels -> :class:`GridPoints` on ``record``'s patch grid."""
    if not isinstance(record, PreprocessRecord):
        raise TypeError(f"uv_to_grid: record must be a PreprocessRecord, got {type(record).__name__}")
    uv = _check_uv(uv, "uv_to_grid")
    t, p = record.transform, record.patch_size
    frame_h, frame_w = t.frame_size
    ct, cl, ch, cw = t.crop or (0, 0, frame_h, frame_w)
    in_crop = (uv[:, 0] + 0.5 >= cl) & (uv[:, 0] + 0.5 < cl + cw) & (uv[:, 1] + 0.5 >= ct) & (uv[:, 1] + 0.5 < ct + ch)
    xy_in = t.frame_to_input(uv)  # (N, 2) input pixels
    gxy = (xy_in + 0.5) / p - 0.5  # (N, 2) grid coordinates
    col, row = torch.floor(gxy[:, 0] + 0.5).long(), torch.floor(gxy[:, 1] + 0.5).long()
    rows, cols = record.grid_size
    on_grid = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    valid = in_crop & t.on_content(xy_in) & on_grid & torch.isfinite(uv).all(1)
    index = torch.where(valid, row * cols + col, torch.full_like(row, -1))
    return GridPoints(gxy, index, valid, record)


def grid_to_uv(xy, record: PreprocessRecord) -> Tensor:
    """Inverse of :func:`uv_to_grid`'s coordinates: grid ``xy`` (N, 2) -> frame uv (N, 2) float64."""
    xy = _check_uv(xy, "grid_to_uv")
    return record.transform.input_to_frame((xy + 0.5) * record.patch_size - 0.5)


def sample_features(features: Tensor, points: GridPoints, mode: str = "bilinear") -> tuple[Tensor, Tensor]:
    """Sample ``features`` (C, Hf, Wf) at ``points`` -> ``(N, C)`` features and ``(N,)`` validity.
    (An encoder's ``(Hf, Wf, C)`` output: pass ``feats.permute(2, 0, 1)``.)

    ``mode``: ``bilinear`` blends the four nearest patch centres (``align_corners=False``);
    ``nearest`` returns the feature of the patch the point lies in. Invalid points get zeros.
    Near the grid edge, bilinear weights that fall outside the grid are renormalised over the
    patches inside it (no zero or border padding leaks into a valid point).
    """
    if features.ndim != 3:
        raise ValueError(f"sample_features: features must be (C, Hf, Wf), got shape {tuple(features.shape)}")
    rows, cols = points.record.grid_size
    if tuple(features.shape[1:]) != (rows, cols):
        raise ValueError(
            f"sample_features: features are {tuple(features.shape[1:])} (Hf, Wf) but the record "
            f"({points.record.encoder or 'unnamed'}) has a {rows}x{cols} patch grid; pass the features of the "
            "encoder whose PreprocessRecord made these points (channels first: (C, Hf, Wf))."
        )
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"sample_features: mode={mode!r}; use 'bilinear' or 'nearest'")
    valid = points.valid
    if mode == "nearest":
        flat = features.reshape(features.shape[0], -1)  # (C, Hf*Wf)
        out = flat[:, points.index.clamp(min=0)].T  # (N, C)
        return out * valid[:, None].to(out.dtype), valid
    size = torch.tensor([cols, rows], dtype=torch.float64)
    norm = ((points.xy + 0.5) / size * 2 - 1).to(features.dtype)  # (N, 2) in [-1, 1]
    norm = torch.where(valid[:, None], norm, torch.zeros_like(norm))
    feats = torch.cat([features, torch.ones_like(features[:1])])[None]  # (1, C+1, Hf, Wf); last = coverage
    out = F.grid_sample(feats, norm[None, :, None], mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out[0, :, :, 0].T  # (N, C+1)
    out = out[:, :-1] / out[:, -1:].clamp(min=1e-12)  # renormalise over in-grid neighbours
    return out * valid[:, None].to(out.dtype), valid
