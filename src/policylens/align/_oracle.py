"""The oracle-encoder check: with features that are known to correspond, does the data path retrieve?

:class:`OracleEncoder` is a 2D "encoder" whose patch feature is a fixed random projection of that
patch's network-input pixels (seeded; no learning). :func:`oracle_retrieval` runs the real stage-1
data path on episodes with depth and calibration:

- 2D side: ``extract_features`` writes the oracle's grids into a store, ``ingest_depth`` writes the
  back-projected points, :class:`AlignDataset` joins them and gives each point's patch index
  (stored uv through the record, ``uv_to_grid``); the 2D row of a point is its patch's stored feature.
- 3D side, independently of the stored uv: each point's world xyz is projected through the camera
  calibration (``project_points``), looked up on the grid through the same record, and the same
  random projection is applied to the pixels of that patch of the preprocessed frame.

Rows are scored by ``evaluate_alignment`` in within-frame pools, keyed by (frame, patch): a point
whose two routes land on the same patch retrieves its patch (unless another patch of its frame
has identical pixels, a tie counted in expectation). Anything that moves a point to another patch
(a transposed grid, a wrong record, an OpenGL pose, off-by-one steps in the join) shows up as a miss.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._correspondence import project_points
from ._dataset import AlignDataset
from ._encoders import PatchEncoder
from ._extract import extract_features
from ._ingest import ingest_depth
from ._record import PreprocessRecord
from ._retrieval import AlignmentReport, evaluate_alignment
from ._sampling import uv_to_grid

__all__ = ["OracleEncoder", "oracle_retrieval"]


class OracleEncoder(PatchEncoder):
    """Patch feature = ``W · vec(patch pixels)`` with a fixed seeded Gaussian ``W`` ((3·p·p, dim));
    frames are squashed to ``size`` × ``size`` (``PreprocessRecord.resize``), pixels kept in [0, 1]."""

    name, mean, std = "oracle", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def __init__(self, size: int = 112, patch_size: int = 14, dim: int = 64, seed: int = 0) -> None:
        if size % patch_size:
            raise ValueError(f"OracleEncoder: size={size} is not a multiple of patch_size={patch_size}")
        self.model, self.size, self.patch_size, self.dim = None, size, patch_size, dim
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(3 * patch_size * patch_size, dim, generator=gen)  # (3·p·p, dim)

    def record(self, frame_size: tuple[int, int]) -> PreprocessRecord:
        return PreprocessRecord.resize(frame_size, self.size, self.patch_size, encoder=self.name)

    def patches(self, pixels: Tensor) -> Tensor:
        """(B, 3, h, w) -> (B, N, 3·p·p), patches row-major."""
        return F.unfold(pixels.float(), self.patch_size, stride=self.patch_size).transpose(1, 2)

    def tokens(self, pixels: Tensor) -> Tensor:
        return self.patches(pixels) @ self.weight  # (B, N, dim)


def oracle_retrieval(
    episodes,
    work: str | os.PathLike,
    *,
    camera: str,
    encoder: OracleEncoder | None = None,
    points: int = 512,
    stride: int = 2,
    seed: int = 0,
) -> AlignmentReport:
    """Within-frame retrieval (keys (frame, patch)) of oracle 2D vs 3D features on ``episodes``
    (with depth and calibration of ``camera``); stores go under ``work``. See the module docstring."""
    enc = encoder or OracleEncoder()
    work = Path(work)
    extract_features(episodes, enc, work / "oracle", camera=camera, dtype="float32", progress=False)
    ingest_depth(episodes, work / "points", camera=camera, points=points, stride=stride, seed=seed, progress=False)
    ds = AlignDataset(work / "points", {"oracle": work / "oracle"})
    batch = ds.get_batch(list(range(len(ds))))
    feats = batch["features"]["oracle"][:, 0].flatten(1, 2)  # (F, N, dim)
    idx, ok = batch["patch_index"]["oracle"][:, 0], batch["patch_valid"]["oracle"][:, 0]  # (F, P)
    a_rows, b_rows, keys = [], [], []
    for f in range(len(ds)):
        e, t = int(batch["episode"][f]), int(batch["step"][f, 0])
        ep = episodes[e]
        cal = ep.calibration[camera]
        xyz = batch["xyz"][f, 0].double().numpy()  # (P, 3)
        uv, _ = project_points(xyz, cal.intrinsics, cal.extrinsics_at(t))
        pixels, record = enc.preprocess(np.array(ep.frame(camera, t))[None])
        g = uv_to_grid(torch.from_numpy(uv).float(), record)
        keep = ok[f] & g.valid
        b = (enc.patches(pixels)[0] @ enc.weight)[g.index[keep]]  # (P', dim): the 3D route
        a_rows.append(feats[f][idx[f][keep]])  # the 2D route, through the stores
        b_rows.append(b)
        keys.append(torch.stack([torch.full_like(idx[f][keep], f), idx[f][keep]], -1))
    keys_t = torch.cat(keys)  # (M, 2) frame, patch
    a, b = torch.cat(a_rows), torch.cat(b_rows)
    return evaluate_alignment(a, b, pool="within-frame", frames=keys_t[:, 0], keys=keys_t)
