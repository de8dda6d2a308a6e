"""What a retention step costs against a plain fine-tuning step, timed interleaved.

Each row (plain fine-tuning, experience-replay-free retention methods and the step-cost variants
of CRaFT) trains its own copy of the shipped ``tiny_vla`` with the step ``retain train`` runs
(``retention_step``: anchor batch, the Retainer's passes, clipping, AdamW). The rows take their
steps in turn, step by step, on the same task batches and the same anchor cache (anchors decoded
once), so load from other work on a shared machine falls on every row alike. Reported per row: the
mean time per step over whole ``retain_every`` cycles (the steps alternate between two costs),
the median, and the mean as a ratio to plain's from the same run.

    python bench/retention_step.py                 # 40 steps per row, task batch 16, anchors 16
    python bench/retention_step.py --batch-size 8 --steps 60
    python bench/retention_step.py --smoke         # seconds: a check, not a figure
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from policylens.anchors import build_cache
from policylens.models import flow_noise, load_model
from policylens.retain import RetainTrainConfig, RetentionConfig, open_anchors, retention_step, task_retainer

ROWS = {  # name: method, projection, retain_every, anchor batch divisor, anchor features
    "plain": ("plain", "conflict", 1, 1, "all"),
    "CRaFT (conflict)": ("craft", "conflict", 1, 1, "all"),
    "CRaFT (active)": ("craft", "active", 1, 1, "all"),
    "CRaFT every 2": ("craft", "conflict", 2, 1, "all"),
    "CRaFT every 4": ("craft", "conflict", 4, 1, "all"),
    "CRaFT anchors B/2": ("craft", "conflict", 1, 2, "all"),
    "CRaFT anchors B/4": ("craft", "conflict", 1, 4, "all"),
    "CRaFT anchors B/2 every 2": ("craft", "conflict", 2, 2, "all"),
    "fixed weight": ("fixed", "conflict", 1, 1, "all"),
    "PCGrad": ("pcgrad", "conflict", 1, 1, "all"),
    "action distillation": ("fixed", "conflict", 1, 1, "action"),
}


def make_row(name: str, args, caches: dict[str, Path]):
    """The row's own model, optimiser and ``retain train`` step."""
    method, projection, every, div, features = ROWS[name]
    torch.manual_seed(0)
    model = load_model("tiny_vla").train()
    anchors = open_anchors(caches[features], model.eval(), preload=True, features=features)
    model.train()
    config = RetainTrainConfig(batch_size=args.batch_size, anchor_batch_size=max(1, args.anchor_batch_size // div),
                               retain_every=every, anchor_features=features, log_every=10**9)  # fmt: skip
    lam = 1.0 if method in ("fixed", "pcgrad") else 0.0
    retention = RetentionConfig(epsilon=0.02, method=method, lam=lam, lam_lr=20.0, projection=projection)
    step = retention_step(task_retainer(model, anchors, retention), anchors, config)
    optimizer = torch.optim.AdamW(step.retainer.params, lr=1e-4, weight_decay=1e-4)
    return model, step, optimizer, every


def task_batches(model, n: int, batch_size: int) -> list[dict]:
    """``n`` task batches in the format ``train_vla`` hands its step: model inputs, actions, flow noise."""
    out = []
    for i in range(n):
        batch = model.example_batch(batch_size, seed=i, with_action=True)
        out.append({**batch, **flow_noise(model, batch_size)})
    return out


def run(args) -> list[dict]:
    work = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-retention-step-"))
    caches = {"all": work / "bridge", "action": work / "action"}
    for features, options in (("all", None), ("action", {"action": True, "hidden": False})):
        if not (caches[features] / "manifest.json").is_file():
            build_cache("tiny_vla", f"synthetic:{args.anchors}", str(caches[features]), kind="bridge",
                        batch_size=16, progress=False, bridge=options)  # fmt: skip
    rows = {name: make_row(name, args, caches) for name in args.rows}
    torch.manual_seed(1)
    batches = task_batches(next(iter(rows.values()))[0], args.steps, args.batch_size)
    times: dict[str, list[float]] = {name: [] for name in rows}
    order = list(rows)
    rng = np.random.default_rng(0)
    for i in range(args.steps):
        rng.shuffle(order)  # no row always runs first after the others
        for name in order:
            model, step, optimizer, _ = rows[name]
            t0 = time.perf_counter()
            step(model, batches[i], optimizer)
            times[name].append(time.perf_counter() - t0)
        if args.progress:
            print(f"step {i + 1}/{args.steps}", end="\r", flush=True)
    results = []
    for name in args.rows:
        every = rows[name][3]
        ts = np.asarray(times[name][args.warmup :])
        whole = len(ts) - len(ts) % every or len(ts)  # whole retain_every cycles
        results.append({"row": name, "mean_s": float(ts[:whole].mean()), "median_s": float(np.median(ts))})
    plain = next(r["mean_s"] for r in results if r["row"] == "plain")
    for r in results:
        r["ratio"] = r["mean_s"] / plain
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--out", help="folder for the anchor caches (default: a temp dir)")
    ap.add_argument("--steps", type=int, default=40, help="steps per row (the first --warmup not timed)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="task samples per step")
    ap.add_argument("--anchor-batch-size", type=int, default=16, help="anchor samples per step (before B/2, B/4)")
    ap.add_argument("--anchors", type=int, default=32, help="samples in the anchor cache")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names (plain is always run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    args.rows = ["plain", *[r.strip() for r in args.rows.split(",") if r.strip() and r.strip() != "plain"]]
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"--rows: {unknown} are not rows; choose from {list(ROWS)}")
    if args.smoke:
        args.steps, args.warmup, args.batch_size, args.anchor_batch_size, args.anchors = 4, 0, 2, 2, 4
        args.rows = ["plain", "CRaFT (conflict)", "CRaFT every 2", "action distillation"]
    if args.steps <= args.warmup:
        raise SystemExit(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    args.progress = not args.smoke
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}", flush=True)
    results = run(args)
    print(f"\n{args.steps - args.warmup} timed steps per row, task batch {args.batch_size}, "
          f"anchor batch {args.anchor_batch_size} (before B/2, B/4)")  # fmt: skip
    print("| row | mean s / step | median s / step | × plain (mean) |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['row']} | {r['mean_s']:.4f} | {r['median_s']:.4f} | {r['ratio']:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
