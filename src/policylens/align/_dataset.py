"""Training data for alignment: a point store joined with feature stores by (episode, step).

>>> ds = AlignDataset("points/", {"dinov2": "feats/dinov2", "siglip": "feats/siglip"}, window=4)
>>> item = ds[0]  # T = window steps of one episode
>>> item["features"]["dinov2"]     # (T, Hf, Wf, C) float
>>> item["xyz"], item["uv"], item["valid"]   # (T, N, 3), (T, N, 2), (T, N)
>>> item["patch_index"]["dinov2"]  # (T, N) long, uv_to_grid(uv, record).index (-1: invalid or padding)
>>> train = make_loader("points/", feats, batch_size=32, split="train", num_workers=2)

Items: with a window store (``layout="windows"``) among the feature stores, its rows (every window
store must hold the same windows); otherwise windows of ``window`` consecutive steps of the point
store's frames (``window=1``: single frames; the ``T`` axis stays). Every (episode, step) an item
needs must be in every store, and the records must agree with the points (camera, frame size).

Reads are batched: :meth:`AlignDataset.get_batch` answers a list of items with one read per store
(the loader's sampler yields lists). Store handles are memory maps opened lazily in each process
(``FeatureStore`` drops them when pickled), so workers open their own and keep them
(``persistent_workers``). Held-out split by episode: :func:`episode_split`. Stores of either
``align`` layout version (``_layout.py``) can be joined.

Under torchrun every rank draws the same global batches and reads only its contiguous block of each
(``make_loader(rank=, world=)``): a :class:`Shard` of ids, whose batch carries ``share``, the rank's
fraction of the global batch's items. A rank left without items (a pass's last, short batch) reads
the batch's first item as a stand-in with share 0, so every rank still takes the step.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ..runs import shard
from ..store import open_store
from ._extract import frame_windows
from ._layout import align_info as _align_info
from ._layout import as_grid, as_xyz, feature_field
from ._record import PreprocessRecord
from ._sampling import uv_to_grid

__all__ = ["AlignDataset", "ResumableBatchSampler", "Shard", "episode_split", "make_loader"]

POINT_FIELDS = ("rgb", "uv", "valid", "object_id", "point_features")


def episode_split(episodes: Sequence[int], held_out: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, held_out)`` episode ids: a seeded ``held_out`` fraction (at least one) is held out."""
    ids = sorted({int(e) for e in episodes})
    if not 0 < held_out < 1 or len(ids) < 2:
        raise ValueError(
            f"episode_split: held_out={held_out} of {len(ids)} episodes; need 0 < held_out < 1, >= 2 episodes"
        )
    k = max(1, round(held_out * len(ids)))
    pick = set(np.random.default_rng(seed).choice(ids, k, replace=False).tolist())
    return [e for e in ids if e not in pick], sorted(pick)


def _keys(store) -> tuple[np.ndarray, np.ndarray]:
    b = store.get_batch(slice(None))
    return b["episode"].numpy(), b["step"].numpy()  # (rows, T) each


class AlignDataset(Dataset):
    """Point store ``points`` joined with ``features`` ({name: store path}, or a list named by encoder)."""

    def __init__(
        self,
        points: str | os.PathLike,
        features: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
        *,
        window: int = 1,
        stride: int | None = None,
        episodes: Sequence[int] | None = None,
    ) -> None:
        self.paths = {"points": str(points)}
        self.point_info = _align_info(points)
        if self.point_info["layout"] != "points":
            raise ValueError(
                f"points={str(points)!r} is a {self.point_info['layout']!r} store; pass an `align ingest` store"
            )
        if not isinstance(features, Mapping):
            features = {_align_info(p)["encoder"]: p for p in features}
        if not features:
            raise ValueError("features: pass at least one feature store from `policylens align extract`")
        stores = {"points": open_store(points, fields=["episode", "step"])}
        self.records: dict[str, PreprocessRecord] = {}
        self.infos: dict[str, dict] = {}
        for name, path in features.items():
            info = self.infos[name] = _align_info(path)
            if info["layout"] not in ("frames", "windows"):
                raise ValueError(
                    f"features {name!r}={str(path)!r} is a {info['layout']!r} store; pass `align extract` stores"
                )
            stores[name] = open_store(path, fields=["episode", "step"])
            self.records[name] = rec = PreprocessRecord.from_dict(info["record"])
            self._check(name, path, info, rec)
            self.paths[name] = str(path)
        self.names = list(features)
        keys = {k: _keys(s) for k, s in stores.items()}
        self.items = self._items(keys, window, stride, episodes)  # (n_items, T, 2) episode, step
        self.rows = {k: self._rows(k, keys[k]) for k in stores}  # store -> (n_items, T) or (n_items,) rows
        self.point_fields = [f for f in POINT_FIELDS if f in stores["points"].specs]
        self._stores: dict[str, Any] | None = None

    def _check(self, name: str, path, info: dict, rec: PreprocessRecord) -> None:
        cam, size = self.point_info.get("camera"), self.point_info.get("frame_size")
        if cam and info.get("camera") and cam != info["camera"]:
            raise ValueError(
                f"feature store {name!r} ({path}) is of camera {info['camera']!r} but the points "
                f"({self.paths['points']}) are of camera {cam!r}; extract / ingest the same --camera"
            )
        if size and tuple(size) != tuple(rec.original_size):
            raise ValueError(
                f"feature store {name!r} ({path}): its record is for {tuple(rec.original_size)} frames but the "
                f"points' uv are pixels of {tuple(size)} frames; the records do not match, re-extract that camera"
            )

    def _items(self, keys, window: int, stride: int | None, episodes) -> np.ndarray:
        wins = [k for k in self.names if self.infos[k]["layout"] == "windows"]
        if wins:
            first = np.stack(keys[wins[0]], -1)  # (rows, T, 2)
            for k in wins[1:]:
                if not np.array_equal(np.stack(keys[k], -1), first):
                    raise ValueError(f"window stores {wins[0]!r} and {k!r} hold different windows; extract both alike")
            items = first
        else:
            ep, st = keys["points"][0][:, 0], keys["points"][1][:, 0]
            eps = np.unique(ep)
            steps = {e: np.sort(st[ep == e]) for e in eps.tolist()}
            wins_ = frame_windows([len(steps[e]) for e in eps.tolist()], window, stride)
            items = np.array([[(eps[i], steps[eps[i]][j]) for j in js] for i, js in wins_], np.int64).reshape(
                -1, window, 2
            )
        if episodes is not None:
            items = items[np.isin(items[:, 0, 0], np.asarray(list(episodes), np.int64))]
        if not len(items):
            raise ValueError(
                f"no items: the stores share no frames (episodes={None if episodes is None else list(episodes)})"
            )
        return items

    def _rows(self, name: str, keys) -> np.ndarray:
        ep, st = keys
        if name != "points" and self.infos[name]["layout"] == "windows":
            lookup = {
                tuple(zip(e.tolist(), s.tolist(), strict=True)): r for r, (e, s) in enumerate(zip(ep, st, strict=True))
            }
            return np.array([lookup[tuple(map(tuple, it.tolist()))] for it in self.items], np.int64)  # (n_items,)
        lookup = {(int(e), int(s)): r for r, (e, s) in enumerate(zip(ep[:, 0], st[:, 0], strict=True))}
        flat = [tuple(x) for x in self.items.reshape(-1, 2).tolist()]
        missing = [x for x in flat if x not in lookup]
        if missing:
            raise ValueError(
                f"store {name!r} ({self.paths.get(name, '?')}) lacks (episode, step) {sorted(set(missing))[:5]} "
                f"({len(set(missing))} in all) that the points have; extract / ingest the same episodes"
            )
        return np.array([lookup[x] for x in flat], np.int64).reshape(self.items.shape[:2])

    @property
    def episodes(self) -> list[int]:
        return sorted(set(self.items[:, 0, 0].tolist()))

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:  # workers open their own memory maps
        return {**self.__dict__, "_stores": None}

    def _open(self) -> dict[str, Any]:
        if self._stores is None:
            xyz = feature_field(self.point_info)
            self._stores = {"points": open_store(self.paths["points"], fields=[xyz, *self.point_fields])}
            for k in self.names:
                self._stores[k] = open_store(self.paths[k], fields=[feature_field(self.infos[k])])
        return self._stores

    def get_batch(self, ids: Sequence[int]) -> dict[str, Any]:
        """Items ``ids`` stacked: tensors ``(B, T, ...)``; ``features`` / ``patch_index`` / ``patch_valid``
        are ``{encoder: tensor}``."""
        stores, ids = self._open(), np.asarray(ids, np.int64)
        b, t = len(ids), self.items.shape[1]
        rows = self.rows["points"][ids].reshape(-1)
        p = stores["points"].get_batch(rows)
        out: dict[str, Any] = {
            "episode": torch.from_numpy(self.items[ids, 0, 0]),
            "step": torch.from_numpy(self.items[ids, :, 1]),
        }
        out["xyz"] = as_xyz(p[feature_field(self.point_info)]).reshape(b, t, -1, 3)
        out.update({k: p[k].reshape(b, t, *p[k].shape[1:]) for k in self.point_fields})
        uv, valid = out["uv"].reshape(-1, 2), out["valid"].reshape(-1)
        out["features"], out["patch_index"], out["patch_valid"] = {}, {}, {}
        for k in self.names:
            x = stores[k].get_batch(self.rows[k][ids].reshape(-1))[feature_field(self.infos[k])]
            out["features"][k] = as_grid(x, t, self.records[k].grid_size)  # (B, T, Hf, Wf, C)
            g = uv_to_grid(uv, self.records[k])
            ok = g.valid & valid
            out["patch_index"][k] = torch.where(ok, g.index, -1).reshape(b, t, -1)
            out["patch_valid"][k] = ok.reshape(b, t, -1)
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.get_batch([int(i)])
        return {k: ({n: x[0] for n, x in v.items()} if isinstance(v, dict) else v[0]) for k, v in batch.items()}


class Shard(list):
    """A rank's ids of one global batch of ``size`` items; ``stand_in``: it holds none of them and reads
    the batch's first item with weight 0."""

    def __init__(self, ids, size: int, stand_in: bool = False) -> None:
        super().__init__(ids)
        self.size, self.stand_in = size, stand_in

    @property
    def share(self) -> float:
        """This rank's fraction of the global batch's items (0 for a stand-in)."""
        return 0.0 if self.stand_in else len(self) / self.size


class _Batches(Dataset):
    """Batches of ``ds.get_batch(ids)``; a :class:`Shard`'s batch also carries its ``share``."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, ids: list[int]) -> dict[str, Any]:
        batch = self.ds.get_batch(list(ids))
        if isinstance(ids, Shard):
            batch["share"] = ids.share
        return batch


def _keep(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


class ResumableBatchSampler(BatchSampler):
    """torch's ``BatchSampler`` whose next pass can start part-way: after ``skip_next(k)`` that pass
    draws its order as usual (its sampler's generator advances alike) and drops its first ``k``
    batches unread, so a resumed run reads no batch it has already trained on. With ``world`` > 1
    (:meth:`split`) it yields rank ``rank``'s :class:`Shard` of every global batch instead."""

    _skip, rank, world = 0, 0, 1

    def __init__(self, sampler, batch_size: int, drop_last: bool, rank: int = 0, world: int = 1) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.split(rank, world)

    def split(self, rank: int, world: int) -> ResumableBatchSampler:
        """Yield rank ``rank`` of ``world``'s shard of each batch (``world=1``: whole batches)."""
        if not 0 <= rank < world:
            raise ValueError(f"ResumableBatchSampler: rank={rank}, world={world}; expected 0 <= rank < world")
        self.rank, self.world = rank, world
        return self

    def _mine(self, batch: list[int]) -> Shard:
        ids = shard(batch, self.rank, self.world)
        return Shard(ids, len(batch)) if ids else Shard(batch[:1], len(batch), stand_in=True)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        batches = itertools.islice(super().__iter__(), skip, None)
        return batches if self.world == 1 else map(self._mine, batches)

    def skip_next(self, batches: int) -> None:
        self._skip = int(batches)


class BatchStream:
    """Endless batches of ``loader``, pass after pass, at a position that a train state keeps:
    ``taken``, the batches taken from the current pass (0 before the first), and :meth:`generators`,
    the state of the sampler's generator when that pass began. Restore both before the first
    ``next`` and the saved pass starts again from that state, its first ``taken`` batches skipped
    (unread with a :class:`ResumableBatchSampler`, read and dropped otherwise)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.it, self.taken = loader, None, 0
        self.sampler = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler  # index lists
        self.gen = getattr(getattr(self.sampler, "sampler", None), "generator", None)
        self.pass_gen = torch.Generator()  # its state: the sampler generator's when the pass began

    def generators(self) -> dict[str, torch.Generator]:
        return {} if self.gen is None else {"order": self.pass_gen}

    def _open(self, taken: int) -> None:
        if self.gen is not None and taken:
            self.gen.set_state(self.pass_gen.get_state())  # the saved pass, from its start
        elif self.gen is not None:
            self.pass_gen.set_state(self.gen.get_state())
        if not taken:
            self.it = iter(self.loader)
        else:
            with torch.random.fork_rng(devices=[]):  # the loader drew its worker seed when the pass began
                if isinstance(self.sampler, ResumableBatchSampler):
                    self.sampler.skip_next(taken)
                self.it = iter(self.loader)
                if not isinstance(self.sampler, ResumableBatchSampler):
                    for _ in range(taken):
                        next(self.it)
        self.taken = taken

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        if self.it is None:
            self._open(self.taken)
        try:
            batch = next(self.it)
        except StopIteration:
            self._open(0)
            batch = next(self.it)
        self.taken += 1
        return batch


def make_loader(
    points: str | os.PathLike,
    features: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    split: str | None = None,
    held_out: float = 0.2,
    window: int = 1,
    stride: int | None = None,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    seed: int = 0,
    multiprocessing_context: str | None = None,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A DataLoader of batches from :meth:`AlignDataset.get_batch`. ``split``: ``None`` (all episodes),
    ``"train"`` or ``"held_out"`` (:func:`episode_split` with ``held_out`` and ``seed``). ``pin_memory``
    defaults to CUDA being available; workers keep their store handles between epochs. The order is
    drawn from a generator seeded with ``seed``; :class:`BatchStream` keeps a run's place in it. ``rank`` of
    ``world`` > 1: that rank's :class:`Shard` of every batch (module docstring)."""
    if split not in (None, "train", "held_out"):
        raise ValueError(f"make_loader: split={split!r}; use None, 'train' or 'held_out'")
    if batch_size < 1:
        raise ValueError(f"make_loader: batch_size={batch_size}; expected >= 1")
    ds = AlignDataset(points, features, window=window, stride=stride)
    if split is not None:
        train, held = episode_split(ds.episodes, held_out, seed)
        ds = AlignDataset(points, features, window=window, stride=stride, episodes=train if split == "train" else held)
    base = RandomSampler(ds, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(ds)
    workers = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers > 0 else {}
    return DataLoader(
        _Batches(ds),
        sampler=ResumableBatchSampler(base, batch_size, drop_last, rank, world),
        batch_size=None,
        collate_fn=_keep,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        **workers,
    )
