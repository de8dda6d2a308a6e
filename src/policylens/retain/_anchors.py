"""``AnchorSet``: a bridge cache as anchor batches for a student — the cached teacher features
beside the dataset samples they were computed from (opened as the cache's manifest records:
dataset, camera map), and the student's feature extractor driven by the same manifest.

Both come from the store's recipe registry (``recipe_hook``: the ``source`` and ``student``
functions of the recipe ``bridge``, which the job that builds bridge caches registers), so
this module never imports that job; reading the manifest imports it when needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["AnchorSet"]

RECIPE = "bridge"  # the store recipe a bridge cache is built with (`policylens cache build --kind bridge`)


class AnchorSet:
    """``AnchorSet(cache, model)``: ``batch(rows)`` gives the model inputs of those store rows,
    ``target_features`` (the teacher's) and ``sample_index``; ``student`` computes the model's
    features with the graph kept; ``sample(n, rng)`` draws ``n`` rows."""

    def __init__(self, cache: str | Path, model: nn.Module) -> None:
        from policylens.store import StoreError, open_store, recipe_hook, recipe_settings

        self.path = Path(cache)
        self.store = open_store(self.path)
        manifest, where = self.store.manifest, f"anchor cache {self.path}"
        if recipe_settings(manifest, RECIPE) is None:
            meta = manifest["meta"]
            raise StoreError(
                f"{where} is not a bridge cache (kind={manifest['kind']!r}, pooling={meta.get('pooling')!r}); "
                "build one with `policylens cache build --kind bridge`."
            )
        self.student = recipe_hook(manifest, RECIPE, "student", where)(model, manifest, where=where)
        self.source = recipe_hook(manifest, RECIPE, "source", where)(model, manifest)

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
