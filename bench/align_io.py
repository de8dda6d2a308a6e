"""Alignment data I/O: training windows/s through ``policylens.align.make_loader`` (point store + two
feature stores, joined by (episode, step), patch indices per encoder) vs the usual approach: one
whole-episode ``.pt`` pack per episode (``torch.save``), ``torch.load(weights_only=True)``-ed inside the
training loop for each window. Same data, same windows, same patch-index work; printed side by side.

    python bench/align_io.py            # ~30 s on 2 CPU cores, ~0.5 GB of temp disk
    python bench/align_io.py --smoke    # tiny sizes, seconds: checks that it runs

Data: synthetic episodes (random frames, depth, a fixed camera), two fast stand-in encoders with
DINOv2-S / SigLIP-B sized grids (224 px: 16x16x384 and 14x14x768, float16; the features are pooled
pixels through a fixed projection: this measures I/O, not encoders), 1024 points per frame from depth.
Both ways read files the OS has just written (page cache warm for both). Everything lives in a
temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from policylens.align import PatchEncoder, PreprocessRecord, extract_features, ingest_depth, make_loader, uv_to_grid
from policylens.data import CameraCalibration, Episode


class PooledEncoder(PatchEncoder):
    """Stand-in encoder: average-pool the input to the patch grid, project 3 -> C with a fixed matrix."""

    def __init__(self, name: str, size: int, patch: int, channels: int) -> None:
        self.name, self.size, self.patch_size, self.model = name, size, patch, None
        self.proj = torch.randn(3, channels, generator=torch.Generator().manual_seed(len(name)))

    def record(self, frame_size):
        return PreprocessRecord.resize(frame_size, self.size, self.patch_size, encoder=self.name)

    def features(self, pixels):  # (B, 3, h, w) -> (B, Hf, Wf, C)
        return F.avg_pool2d(pixels, self.patch_size).permute(0, 2, 3, 1) @ self.proj


def make_episodes(n: int, length: int, size: int) -> list[Episode]:
    rng = np.random.default_rng(0)
    K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1.0]])
    out = []
    for e in range(n):
        z = np.zeros((length, 7))
        frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(length)]
        ep = Episode(Path(f"synthetic/ep{e}"), "", z, z, {"cam": frames}, {"cam": CameraCalibration(K, np.eye(4))})
        ep.depths = {"cam": [rng.uniform(0.5, 2.0, (size, size)).astype(np.float32) for _ in range(length)]}
        out.append(ep)
    return out


def write_packs(loader_all, root: Path) -> dict[int, Path]:
    """The usual way: one ``.pt`` per episode holding every step's features and points (same values)."""
    per_ep: dict[int, dict] = {}
    for b in loader_all:  # window=1, in order: one frame per item
        for i, e in enumerate(b["episode"].tolist()):
            d = per_ep.setdefault(e, {"step": [], "xyz": [], "uv": [], "valid": [], "features": {}})
            for k in ("step", "xyz", "uv", "valid"):
                d[k].append(b[k][i, 0])
            for k, v in b["features"].items():
                d["features"].setdefault(k, []).append(v[i, 0])
    paths = {}
    root.mkdir()
    for e, d in per_ep.items():
        pack = {k: torch.stack(v) for k, v in d.items() if k != "features"}
        pack["features"] = {k: torch.stack(v) for k, v in d["features"].items()}
        paths[e] = root / f"episode_{e:04d}.pt"
        torch.save(pack, paths[e])
    return paths


def packs_rate(paths, items: np.ndarray, records, batch: int, seconds: float) -> float:
    """Windows/s: per window, load its episode's pack, slice the steps, patch indices per encoder."""
    order = np.random.default_rng(0).permutation(len(items))
    done, t0 = 0, time.perf_counter()
    while True:
        for a in range(0, len(order), batch):
            feats, xyzs, idx = {k: [] for k in records}, [], {k: [] for k in records}
            for j in order[a : a + batch]:
                e, steps = int(items[j, 0, 0]), torch.from_numpy(np.ascontiguousarray(items[j, :, 1]))
                pack = torch.load(paths[e], weights_only=True)
                pos = torch.searchsorted(pack["step"], steps)
                xyzs.append(pack["xyz"][pos])
                uv, valid = pack["uv"][pos].reshape(-1, 2), pack["valid"][pos].reshape(-1)
                for k, rec in records.items():
                    feats[k].append(pack["features"][k][pos])
                    g = uv_to_grid(uv, rec)
                    idx[k].append(torch.where(g.valid & valid, g.index, -1))
            _ = torch.stack(xyzs), {k: torch.stack(v) for k, v in feats.items()}
            done += len(order[a : a + batch])
            if time.perf_counter() - t0 > seconds:
                return done / (time.perf_counter() - t0)


def loader_rate(loader, seconds: float) -> float:
    done, t0 = 0, time.perf_counter()
    while True:
        for b in loader:
            done += len(b["episode"])
            if time.perf_counter() - t0 > seconds:
                return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a few seconds")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        n_eps, length, size, encs, points, window, batch, seconds = (
            2,
            6,
            56,
            [(56, 14, 16), (56, 14, 24)],
            64,
            2,
            2,
            0.2,
        )
    else:
        n_eps, length, size, points, window, batch, seconds = 8, 60, 224, 1024, 4, 16, 5.0
        encs = [(224, 14, 384), (224, 16, 768)]
    with tempfile.TemporaryDirectory(prefix="align_io_") as tmp:
        root = Path(tmp)
        eps = make_episodes(n_eps, length, size)
        feats = {}
        t = time.perf_counter()
        for name, (s, patch, c) in zip(("dinov2_like", "siglip_like"), encs, strict=True):
            feats[name] = root / name
            extract_features(eps, PooledEncoder(name, s, patch, c), feats[name], camera="cam", progress=False)
        ingest_depth(eps, root / "points", camera="cam", points=points, stride=4, progress=False)
        print(f"stores written in {time.perf_counter() - t:.1f} s: {n_eps} episodes x {length} steps, {points} points")
        frames = make_loader(root / "points", feats, batch_size=64, shuffle=False)
        paths = write_packs(frames, root / "packs")
        pack_mb = sum(q.stat().st_size for q in paths.values()) / len(paths) / 2**20
        ours = make_loader(root / "points", feats, batch_size=batch, window=window, stride=1, seed=0)
        ds = ours.dataset.ds
        rates = {"episode .pt packs, torch.load per window": packs_rate(paths, ds.items, ds.records, batch, seconds)}
        rates["policylens stores, make_loader (workers 0)"] = loader_rate(ours, seconds)
        workers = make_loader(root / "points", feats, batch_size=batch, window=window, stride=1, num_workers=1)
        rates["policylens stores, make_loader (workers 1)"] = loader_rate(workers, seconds)
        base = next(iter(rates.values()))
        print(f"\nwindows of {window} steps, batch {batch}, {len(ds)} windows; a pack is {pack_mb:.1f} MB per episode")
        print(f"{'way':<46} {'windows/s':>10} {'× packs':>8}")
        for k, r in rates.items():
            print(f"{k:<46} {r:>10.1f} {r / base:>7.1f}×")


if __name__ == "__main__":
    main()
