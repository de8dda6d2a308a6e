"""``AnchorSet``: a bridge cache as anchor batches for a student — the cached teacher features
beside the dataset samples they were computed from (opened as the cache's manifest records:
dataset, camera map), and the student's feature extractor driven by the same manifest.

Both come from the store's recipe registry (``recipe_hook``: the ``source`` and ``student``
functions of the recipe ``bridge``, which the job that builds bridge caches registers), so
this module never imports that job; reading the manifest imports it when needed.

Reading a DROID sample decodes its video frames; a training run draws anchor batches every step,
so ``preload=True`` decodes every anchor sample once, when the set opens, into model-ready tensors
(and reads the cached features once) and each batch is a slice of those: the same tensors the
per-step path builds, without the decoding. ``features="action"`` keeps only the action output of
a cache built with it (the teacher's predicted velocities: action distillation's targets)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["ANCHOR_FEATURES", "AnchorSet"]

RECIPE = "bridge"  # the store recipe a bridge cache is built with (`policylens cache build --kind bridge`)
ANCHOR_FEATURES = ("all", "action")  # every cached feature, or the action output alone


class AnchorSet:
    """``AnchorSet(cache, model)``: ``batch(rows)`` gives the model inputs of those store rows,
    ``target_features`` (the teacher's) and ``sample_index``; ``student`` computes the model's
    features with the graph kept; ``sample(n, rng)`` draws ``n`` rows. ``preload``: decode every
    sample once now (memory: the model inputs of every anchor sample) instead of at each batch;
    ``features``: ``all`` or ``action`` (the action output alone; the cache must hold it)."""

    def __init__(self, cache: str | Path, model: nn.Module, preload: bool = False, features: str = "all") -> None:
        from policylens.store import StoreError, open_store, recipe_hook, recipe_settings

        if features not in ANCHOR_FEATURES:
            raise ValueError(f"AnchorSet: features={features!r} is unknown; use one of {list(ANCHOR_FEATURES)}")
        self.path = Path(cache)
        self.store = open_store(self.path)
        manifest, where = self.store.manifest, f"anchor cache {self.path}"
        if recipe_settings(manifest, RECIPE) is None:
            meta = manifest["meta"]
            raise StoreError(
                f"{where} is not a bridge cache (kind={manifest['kind']!r}, pooling={meta.get('pooling')!r}); "
                "build one with `policylens cache build --kind bridge`."
            )
        student = recipe_hook(manifest, RECIPE, "student", where)
        view = {} if features == "all" else {"only": features}
        self.student = student(model, manifest, where=where, **view)
        self.columns = getattr(self.student, "columns", slice(None))  # the stored columns the student gives
        self.source = recipe_hook(manifest, RECIPE, "source", where)(model, manifest)
        self._loaded: dict[str, torch.Tensor] | None = None
        if preload:
            self._loaded = self._read(range(len(self)))

    def __len__(self) -> int:
        return len(self.store)

    def _read(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """Rows read from the store and their samples from the dataset (decoded now)."""
        from policylens.store import collate

        stored = self.store[list(map(int, rows))]
        index = stored["sample_index"]
        batch = collate([self.source[int(i)] for i in index])
        batch["target_features"] = stored["target_features"][:, self.columns]
        batch["sample_index"] = index
        return batch

    def batch(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        if self._loaded is None:
            return self._read(rows)
        take = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        out = {}
        for key, value in self._loaded.items():
            out[key] = value[take] if isinstance(value, torch.Tensor) else [value[int(r)] for r in take]
        return out

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return self.batch(rng.integers(0, len(self), n))
