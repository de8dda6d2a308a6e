"""``AnchorSet``: a bridge cache as anchor batches for a student — the cached teacher features
beside the dataset samples they were computed from (opened as the cache's manifest records:
dataset, camera map), and the student's feature extractor driven by the same manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["AnchorSet"]


class AnchorSet:
    """``AnchorSet(cache, model)``: ``batch(rows)`` gives the model inputs of those store rows,
    ``target_features`` (the teacher's) and ``sample_index``; ``student`` computes the model's
    features with the graph kept; ``sample(n, rng)`` draws ``n`` rows."""

    def __init__(self, cache: str | Path, model: nn.Module) -> None:
        from policylens.anchors import open_source, student_extractor
        from policylens.store import open_store

        self.path = Path(cache)
        self.store = open_store(self.path)
        manifest = self.store.manifest
        meta = manifest["meta"]
        self.student = student_extractor(model, manifest, where=f"anchor cache {self.path}")
        camera_map = (meta.get("extra") or {}).get("camera_map")
        self.source = open_source(model, meta["dataset_id"], camera_map=camera_map)

    def __len__(self) -> int:
        return len(self.store)

    def batch(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        from policylens.store import collate

        stored = self.store[list(map(int, rows))]
        index = stored["sample_index"]
        batch = collate([self.source[int(i)] for i in index])
        batch["target_features"] = stored["target_features"]
        batch["sample_index"] = index
        return batch

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return self.batch(rng.integers(0, len(self), n))
