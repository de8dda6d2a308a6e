"""Project point-cloud features into the alignment space: (B, P, ·) -> (B, P, D), one row per point.

Two sources:

- per-point features from a 3D encoder (e.g. ULIP's 256-d): ``Linear(GELU(Linear(LayerNorm(f))))``;
- no features: a small PointNet-style net on xyz (and rgb when ``use_rgb``). Coordinates are centred
  on each cloud's centroid (translation invariance); a shared per-point MLP gives local features, a
  max-pool over points a global one, and ``[local, global]`` goes through a last MLP (PointNet's
  segmentation head, without the input/feature transform nets).

``mask`` (B, P) bool marks real points in padded clouds; padded points are left out of the centroid
and the max-pool (their output rows are still computed and should be ignored by the caller).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

__all__ = ["PointProjector"]


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(dims):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers[:-1])


class PointProjector(nn.Module):
    """``PointProjector(dim, feat_dim=256)(xyz, feats=ulip)`` or ``PointProjector(dim, use_rgb=True)(xyz, rgb=rgb)``."""

    def __init__(self, dim: int, feat_dim: int | None = None, use_rgb: bool = False, hidden: int = 128) -> None:
        super().__init__()
        self.dim, self.feat_dim, self.use_rgb = dim, feat_dim, use_rgb
        if feat_dim is not None:
            self.proj = nn.Sequential(nn.LayerNorm(feat_dim), _mlp([feat_dim, hidden, dim]))
        else:
            self.local = _mlp([6 if use_rgb else 3, hidden // 2, hidden])
            self.head = _mlp([2 * hidden, hidden, dim])

    def forward(
        self, xyz: Tensor, feats: Tensor | None = None, rgb: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        if xyz.dim() != 3 or xyz.shape[-1] != 3:
            raise ValueError(f"PointProjector: xyz has shape {tuple(xyz.shape)}; expected (B, P, 3)")
        b, p = xyz.shape[:2]
        if mask is not None and (mask.shape != (b, p) or mask.dtype != torch.bool):
            raise ValueError(f"PointProjector: mask {tuple(mask.shape)} {mask.dtype}; expected bool ({b}, {p})")
        if self.feat_dim is not None:
            if feats is None or feats.shape != (b, p, self.feat_dim):
                got = None if feats is None else tuple(feats.shape)
                raise ValueError(
                    f"PointProjector: feats={got}; built with feat_dim={self.feat_dim}, so pass feats "
                    f"({b}, {p}, {self.feat_dim}), or build with feat_dim=None to project xyz"
                )
            return self.proj(feats)
        if feats is not None:
            raise ValueError("PointProjector: feats given but feat_dim=None; build with feat_dim=feats.shape[-1]")
        if rgb is not None and not self.use_rgb:
            raise ValueError("PointProjector: rgb given but use_rgb=False; build with use_rgb=True to use colour")
        if self.use_rgb and (rgb is None or rgb.shape != xyz.shape):
            raise ValueError(
                f"PointProjector: use_rgb=True needs rgb ({b}, {p}, 3); got {rgb if rgb is None else rgb.shape}"
            )
        w = torch.ones(b, p, 1, device=xyz.device, dtype=xyz.dtype) if mask is None else mask[..., None].to(xyz.dtype)
        centred = xyz - (xyz * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)
        x = torch.cat([centred, rgb], -1) if self.use_rgb else centred
        local = self.local(x)  # (B, P, H)
        pooled = local if mask is None else local.masked_fill(~mask[..., None], float("-inf"))
        glob = pooled.amax(1, keepdim=True).expand_as(local)  # (B, P, H)
        return self.head(torch.cat([local, glob], -1))  # (B, P, D)
