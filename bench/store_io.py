"""Feature-store I/O benchmark: write, random reads against the usual baselines, chunk sizes,
the cost of checking chunk checksums on read, build.

    python bench/store_io.py            # ~6-8 minutes on 2 CPU cores, ~1 GB of temp disk
    python bench/store_io.py --quick    # smaller stores, shorter timings
    python bench/store_io.py --smoke    # tiny sizes, a few seconds: checks that every section runs

Everything is written under a temporary directory (removed at the end) unless ``--out DIR``
names a new or empty directory to keep the stores in. Read methods are each timed in a fresh
subprocess (so peak memory is theirs alone; ``--smoke`` runs them in-process):
(a) list-of-dicts ``torch.save`` shards, loaded on demand per sample; (a') every shard held in
RAM; (b) a raw NumPy memmap of one ``.npy`` file; plain zarr v3 indexing; and the policylens
store (memmapped chunk files) per sample, per 64-sample batch, and held in RAM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from policylens.store import StoreMeta, build_store, open_store

SHAPES = {"hidden_feature": ("target_features", (2048,)), "hidden_state": ("teacher_hidden", (4, 64, 1024))}


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM = peak RSS, RssAnon)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_data(kind: str, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPES[kind][1]), dtype=np.float32).astype(np.float16)


def write_all(kind: str, data: np.ndarray, root: Path, shard: int, chunk_rows: int | None = None) -> dict:
    """Write the store, the torch.save shards and the .npy; return MB/s of each."""
    name, mb, out = SHAPES[kind][0], data.nbytes / 2**20, {}
    t = time.perf_counter()
    src = [{"i": i} for i in range(len(data))]
    build_store(
        root / f"{kind}.store",
        src,
        lambda b: {name: torch.from_numpy(data[b["i"].numpy()])},
        StoreMeta(kind=kind),
        batch_size=64,
        chunk_rows=chunk_rows,
        progress=False,
    )
    out["store"] = mb / (time.perf_counter() - t)
    t = time.perf_counter()
    (root / f"{kind}.shards").mkdir()
    for s in range(0, len(data), shard):
        rows = [{"index": i, name: torch.from_numpy(data[i].copy())} for i in range(s, min(s + shard, len(data)))]
        torch.save(rows, root / f"{kind}.shards" / f"{s // shard:05d}.pt")
    out["torch.save shards"] = mb / (time.perf_counter() - t)
    t = time.perf_counter()
    np.save(root / f"{kind}.npy", data)
    out["numpy .npy"] = mb / (time.perf_counter() - t)
    return out


def child(spec: dict) -> dict:
    """One read method, timed for ``seconds`` of random reads; prints samples/s and memory."""
    torch.set_num_threads(1)  # as in DataLoader workers
    root, kind, method, n, shard = Path(spec["root"]), spec["kind"], spec["method"], spec["n"], spec["shard"]
    name = SHAPES[kind][0]
    base_rss, base_anon = _status_mb("VmRSS"), _status_mb("RssAnon")
    rng = np.random.default_rng(1)
    batch = 64 if method.endswith("batch64") else 1
    files = sorted((root / f"{kind}.shards").glob("*.pt"))
    if method == "shards on demand (a)":

        def read(ix):
            return torch.load(files[ix[0] // shard], weights_only=True)[ix[0] % shard][name]
    elif method.startswith("shards in RAM (a')"):
        shards = [torch.load(f, weights_only=True) for f in files]

        def read(ix):  # batch: what a DataLoader's default collate does with these samples
            if len(ix) == 1:
                return shards[ix[0] // shard][ix[0] % shard][name]
            return torch.stack([shards[i // shard][i % shard][name] for i in ix])
    elif method.startswith("numpy memmap (b)"):
        mm = np.load(root / f"{kind}.npy", mmap_mode="r")

        def read(ix):
            return torch.from_numpy(mm[ix[0]].copy() if len(ix) == 1 else mm[np.sort(ix)])
    elif method == "zarr v3 plain":
        import zarr

        arr = zarr.open_array(str(root / f"{kind}.store" / "data" / name), mode="r")

        def read(ix):
            return torch.from_numpy(arr[ix[0]])
    else:
        ds = open_store(root / f"{kind}.store", fields=[name], in_memory="RAM" in method, copy="views" not in method)
        ds[0]

        def read(ix):
            return ds[int(ix[0])][name] if len(ix) == 1 else ds.get_batch(ix)[name]

    read(rng.integers(0, n, batch))
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < spec["seconds"] and count < spec["max_reads"]:
        read(rng.integers(0, n, batch))
        count += batch
    rate = count / (time.perf_counter() - t0)
    return {"rate": rate, "peak_rss_mb": _status_mb("VmHWM") - base_rss, "anon_mb": _status_mb("RssAnon") - base_anon}


READERS = [
    "shards on demand (a)",
    "shards in RAM (a')",
    "shards in RAM (a') batch64",
    "numpy memmap (b)",
    "numpy memmap (b) batch64",
    "zarr v3 plain",
    "policylens store",
    "policylens store views",
    "policylens store batch64",
    "policylens store in RAM",
]


def run_child(spec: dict, in_process: bool = False) -> dict:
    if in_process:
        threads = torch.get_num_threads()
        try:
            return child(spec)
        finally:
            torch.set_num_threads(threads)
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def chunk_sweep(root: Path, n: int, sizes: tuple[int, ...] = (64, 256, 1024, 4096), seconds: float = 0.5) -> None:
    print("\n## chunk size (hidden_feature D=2048 float16, uncompressed)")
    print(
        f"{'rows/chunk':>10} {'chunk MB':>8} {'write MB/s':>10} {'store read/s':>12} {'batch64 read/s':>14} "
        f"{'zarr read/s':>11}"
    )
    data = make_data("hidden_feature", n)
    for rows in sizes:
        d = root / f"sweep{rows}"
        d.mkdir()
        w = write_all("hidden_feature", data, d, shard=n, chunk_rows=rows)["store"]
        ds = open_store(d / "hidden_feature.store", fields=["target_features"])
        import zarr

        z = zarr.open_array(str(d / "hidden_feature.store" / "data" / "target_features"), mode="r")
        rng = np.random.default_rng(0)
        rates = []
        calls = (
            (lambda ds=ds, rng=rng: ds[int(rng.integers(n))], 1),
            (lambda ds=ds, rng=rng: ds.get_batch(rng.integers(0, n, 64)), 64),
            (lambda z=z, rng=rng: z[int(rng.integers(n))], 1),
        )
        for fn, per in calls:
            fn()
            k, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                fn()
                k += per
            rates.append(k / (time.perf_counter() - t0))
        print(
            f"{rows:>10} {rows * 4096 / 2**20:>8.2f} {w:>10.0f} {rates[0]:>12.0f} {rates[1]:>14.0f} {rates[2]:>11.0f}"
        )
        shutil.rmtree(d)


def _rate(fn, per_call: int, seconds: float) -> float:
    """Calls of ``fn`` for about ``seconds``; returns samples per second."""
    fn()
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        k += per_call
    return k / (time.perf_counter() - t0)


def check_overhead(root: Path, n: int, rounds: int, seconds: float) -> None:
    """``open_store(check=False)`` against ``check=True`` (crc32c of each chunk when first mapped).

    "first pass" opens the store and reads every sample once in 64-sample batches, so every
    chunk is mapped (and checked) once: the whole cost of checking. "random" reads are warm:
    the maps, and so the checks, are cached; they should match. Best of ``rounds`` each.
    """
    path = root / "hidden_feature.store"
    labels = ("first pass (every chunk checked)", "random reads", "random batch64")
    res: dict[str, dict[bool, list[float]]] = {k: {False: [], True: []} for k in labels}
    rng = np.random.default_rng(0)
    for r in range(rounds):  # interleaved rounds, alternating which goes first, best of them: the machine is shared
        for check in (False, True) if r % 2 == 0 else (True, False):
            for _ in range(5):  # a fresh store each time: every chunk mapped (and checked) again
                t = time.perf_counter()
                ds = open_store(path, fields=["target_features"], check=check)
                for s in range(0, n, 64):
                    ds.get_batch(np.arange(s, min(s + 64, n)))
                res[labels[0]][check].append(n / (time.perf_counter() - t))
            res[labels[1]][check].append(_rate(lambda ds=ds: ds[int(rng.integers(n))], 1, seconds))
            res[labels[2]][check].append(_rate(lambda ds=ds: ds.get_batch(rng.integers(0, n, 64)), 64, seconds))
    rows = open_store(path).rows
    print(f"\n## read path: check=False vs check=True (hidden_feature, {n} samples, chunks of {rows} rows)")
    print(f"{'samples/s':<34} {'check=False':>11} {'check=True':>11} {'True/False':>10}")
    for label, r in res.items():
        off, on = max(r[False]), max(r[True])
        print(f"{label:<34} {off:>11.0f} {on:>11.0f} {on / off:>9.2f}×")


def build_vs_forward(root: Path, n: int, batch: int, rounds: int = 3) -> None:
    """Cache build (tap + pool + background write) against the bare forward on the same source."""
    from policylens.anchors import open_source, policy_extractor
    from policylens.models import load_model
    from policylens.store import collate

    torch.manual_seed(0)
    model = load_model("tiny_vla").eval()
    source = open_source(model, f"synthetic:{n}")

    def bare() -> None:
        with torch.no_grad():
            for s in range(0, n, batch):
                model.run_prefix(collate([source[i] for i in range(s, min(s + batch, n))]))

    cases = {
        "hidden_feature layer -2 mean_image_tokens": ("hidden_feature", [-2], "mean_image_tokens"),
        "hidden_state 4 layers x 544 tokens (none)": ("hidden_state", [0, 1, 2, 3], "none"),
    }
    times: dict[str, list[float]] = {"bare forward": []} | {k: [] for k in cases}
    for r in range(rounds):  # interleaved rounds, best of them
        t = time.perf_counter()
        bare()
        times["bare forward"].append(time.perf_counter() - t)
        for label, (kind, layers, pooling) in cases.items():
            ex, taps = policy_extractor(model, kind, layers, pooling, "float16")
            t = time.perf_counter()
            build_store(
                root / f"build_{kind}{r}",
                source,
                ex,
                StoreMeta(kind=kind, taps=taps),
                batch_size=batch,
                progress=False,
            )
            times[label].append(time.perf_counter() - t)
    threads = torch.get_num_threads()
    print(
        f"\n## cache build vs bare forward (TinyVLA, synthetic:{n}, batch {batch}, best of {rounds}, {threads} thread)"
    )
    ref = n / min(times["bare forward"])
    for label, ts in times.items():
        rate = n / min(ts)
        print(f"{label:<45} {rate:8.1f} samples/s   {rate / ref:5.2f}× bare")


@contextlib.contextmanager
def work_dir(out: str | None) -> Iterator[Path]:
    """``--out`` (a new or empty directory, kept) or a temporary directory (removed)."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix="policylens-bench-") as tmp:
            yield Path(tmp)
        return
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SystemExit(f"--out {out}: exists and is not an empty directory; pass a new or empty directory.")
    root.mkdir(parents=True, exist_ok=True)
    yield root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller stores, shorter timings")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, in-process readers: a few seconds")
    p.add_argument("--out", help="keep the stores in this new or empty directory (default: a temp dir)")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    torch.set_num_threads(2)
    if args.smoke:
        sizes = {"hidden_feature": (256, 64), "hidden_state": (12, 4)}
        seconds, rounds, sweep, sweep_rows, forward = 0.02, 1, 512, (64, 256), (4, 2)
    elif args.quick:
        sizes = {"hidden_feature": (2000, 1000), "hidden_state": (200, 100)}
        seconds, rounds, sweep, sweep_rows, forward = 0.5, 1, 2000, (64, 256, 1024, 4096), (16, 8)
    else:
        sizes = {"hidden_feature": (10000, 1000), "hidden_state": (600, 100)}
        seconds, rounds, sweep, sweep_rows, forward = 1.0, 3, 10000, (64, 256, 1024, 4096), (48, 8)
    with work_dir(args.out) as root:
        for kind, (n, shard) in sizes.items():
            data = make_data(kind, n)
            shape = SHAPES[kind][1]
            print(f"\n## {kind} {list(shape)} float16, {n} samples ({data.nbytes / 2**20:.0f} MB), shards of {shard}")
            w = write_all(kind, data, root, shard)
            print("write MB/s: " + ", ".join(f"{k} {v:.0f}" for k, v in w.items()))
            del data
            spec = {"root": str(root), "kind": kind, "n": n, "shard": shard, "seconds": seconds, "max_reads": 10**7}
            runs: dict[str, list[dict]] = {m: [] for m in READERS}
            for _ in range(rounds):  # interleaved rounds, median rate: the machine is shared
                for m in READERS:
                    runs[m].append(run_child({**spec, "method": m}, in_process=args.smoke))
            res = {
                m: {
                    "rate": float(np.median([r["rate"] for r in rs])),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                    "anon_mb": max(r["anon_mb"] for r in rs),
                }
                for m, rs in runs.items()
            }
            a, a2, b = (res[m]["rate"] for m in ("shards on demand (a)", "shards in RAM (a')", "numpy memmap (b)"))
            print(
                f"{'random reads':<28} {'samples/s':>10} {'vs (a)':>8} {'vs (a′)':>8} {'vs (b)':>7} "
                f"{'peak RSS MB':>11} {'anon MB':>8}"
            )
            for m, r in res.items():
                print(
                    f"{m:<28} {r['rate']:>10.0f} {r['rate'] / a:>8.1f} {r['rate'] / a2:>8.2f} {r['rate'] / b:>7.2f} "
                    f"{r['peak_rss_mb']:>11.0f} {r['anon_mb']:>8.0f}"
                )
        check_overhead(root, sizes["hidden_feature"][0], max(rounds, 3), seconds)  # cheap: 3 rounds always
        chunk_sweep(root, sweep, sweep_rows, seconds)
        torch.set_num_threads(1)  # a shared 2-core machine: one thread keeps the forward timings stable
        build_vs_forward(root, *forward, rounds=rounds)


if __name__ == "__main__":
    main()
