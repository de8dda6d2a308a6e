"""Anchor batches for training loops: a DataLoader that reads whole batches per call, plus an
infinite iterator.

The sampler yields lists of indices and the store answers each list with one batched read
(``FeatureStore.get_batch``), so per-sample Python overhead is paid once per batch. Each
batch carries ``batch["meta"]``, the manifest's provenance. Workers open their memory maps
lazily, so ``multiprocessing_context="spawn"`` works.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ._errors import StoreError
from ._reader import FeatureStore


class _Batches(Dataset):
    """Adapter: item = a list of sample ids -> one batch dict (with ``meta``)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.meta = store.meta

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, ids: list[int]) -> dict[str, Any]:
        batch: dict[str, Any] = self.store.get_batch(ids)
        batch["meta"] = self.meta
        return batch


def _keep(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def build_anchor_dataloader(
    path: str | os.PathLike | FeatureStore,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    seed: int = 0,
    multiprocessing_context: str | None = None,
    **store_kwargs: Any,
) -> DataLoader:
    """A DataLoader of anchor batches ``{field: Tensor (B, ...), "meta": dict}`` from a store.

    ``shuffle`` draws a new permutation each epoch from a generator seeded with ``seed``.
    ``store_kwargs`` go to :func:`open_store` (``kind=``, ``taps=``, ``fields=``, ``in_memory=``, ``check=``).
    """
    if batch_size < 1:
        raise StoreError(f"batch_size={batch_size}; expected >= 1.")
    store = path if isinstance(path, FeatureStore) else FeatureStore(path, **store_kwargs)
    gen = torch.Generator().manual_seed(seed)
    base = RandomSampler(store, generator=gen) if shuffle else SequentialSampler(store)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(
        _Batches(store),
        sampler=sampler,
        batch_size=None,
        collate_fn=_keep,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )


def infinite_batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """Yield batches forever, starting a new epoch (new shuffle) whenever the loader runs out."""
    if len(loader) == 0:
        raise StoreError("infinite_batches: the loader yields no batches (empty store, or drop_last with too few).")
    while True:
        yield from loader
