"""Alignment evidence, one run: stage 1 InfoNCE vs the Spatial Forcing objective vs a ridge map on
held-out simulated episodes, then stage 2 — one action head on the fused RGB, point, student and raw
encoder features, and blind (no image) — in closed loop on the simulated reach task.

    python bench/align_evidence.py --out runs/align_evidence     # ~40 min on 2 CPU cores; rerun resumes
    python bench/align_evidence.py --smoke                        # tiny sizes, a minute: checks that it runs

Pipeline (the commands of docs/align.md, through the Python API): ``--episodes`` scripted reach
episodes in the DROID layout (RGB, depth, calibration) at ``--image-size``; two random-weight
encoders (DINOv2 and SigLIP layouts from ``--encoder-width`` sized configs, patch 14, 8x8 grids at
112 px) extracted into stores; clouds of ``--points`` points from depth; stage 1 trained with each
objective on the same stores and held-out episodes; the RGB-only student distilled from the InfoNCE
model on the DINOv2 grid; one head per source trained on ``--head-episodes`` fresh expert episodes
and rolled out ``--rollouts`` times on evaluation layouts. Everything goes under ``--out`` (a new
temporary directory by default); each stage resumes, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from policylens.align import (
    AlignTrainConfig,
    DistillConfig,
    HeadConfig,
    build_encoder,
    distill_student,
    evaluate_action_head,
    extract_features,
    ingest_depth,
    train_action_head,
    train_alignment,
)
from policylens.data import open_episodes
from policylens.sim.pybullet import generate_episodes

CAMERA = "varied_camera_1"


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default: a new temporary directory)")
    ap.add_argument("--episodes", type=int, default=40, help="stage-1 episodes (20%% held out)")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--encoder-width", type=int, default=64)
    ap.add_argument("--points", type=int, default=512)
    ap.add_argument("--align-steps", type=int, default=1500)
    ap.add_argument("--max-rows", type=int, default=1024, help="point rows per stage-1 step (InfoNCE is O(rows²))")
    ap.add_argument("--distill-steps", type=int, default=1000)
    ap.add_argument("--head-episodes", type=int, default=400)
    ap.add_argument("--head-steps", type=int, default=3000)
    ap.add_argument("--rollouts", type=int, default=50)
    ap.add_argument("--sources", default="rgb,points,student,raw,blind")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared 2-core box)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a check, not a figure)")
    args = ap.parse_args()
    if args.smoke:
        args.episodes, args.image_size, args.encoder_width, args.points = 3, 56, 16, 64
        args.align_steps, args.distill_steps, args.head_episodes, args.head_steps, args.rollouts = 4, 4, 3, 4, 1
    return args


def _stage1(args, root: Path) -> dict:
    drd = root / "droid"
    if not (drd / "done").is_file():
        generate_episodes("reach", args.episodes, drd, fmt="droid", image_size=args.image_size, if_exists="overwrite")
        (drd / "done").write_text("")
    eps = open_episodes(f"droid:{drd}")
    feats = {}
    for name in ("dinov2", "siglip"):
        cfg = root / f"{name}.json"
        w = args.encoder_width
        fields = {"image_size": args.image_size, "patch_size": 14, "hidden_size": w, "num_hidden_layers": 2}
        cfg.write_text(json.dumps({**fields, "num_attention_heads": 2, "intermediate_size": 2 * w}))
        enc, model_id = build_encoder(name, cfg)
        feats[name] = root / "features" / name
        extract_features(eps, enc, feats[name], camera=CAMERA, model_id=model_id, dataset_id=f"droid:{drd}")
    ingest_depth(eps, root / "points", camera=CAMERA, points=args.points, dataset_id=f"droid:{drd}")
    rows = {}
    for objective in ("infonce", "spatial_forcing"):
        every = max(1, args.align_steps // 5)
        cfg = AlignTrainConfig(steps=args.align_steps, objective=objective, max_rows=args.max_rows, eval_every=every)
        t0 = time.perf_counter()
        train_alignment(root / "points", feats, root / objective, cfg)
        rows[objective] = {**json.loads((root / objective / "eval.json").read_text()), "s": time.perf_counter() - t0}
    dcfg = DistillConfig(steps=args.distill_steps, eval_every=max(1, args.distill_steps // 5))
    distill_student(root / "infonce", feats["dinov2"], root / "student", dcfg)
    rows["student"] = json.loads((root / "student" / "eval.json").read_text())
    return rows


def _top1(report: dict) -> tuple[float, float, float]:
    r = report["retrieval"]
    return r["2d->3d"]["topk"]["1"], r["3d->2d"]["topk"]["1"], report["similarity"]["auroc"]


def _print_stage1(rows: dict) -> None:
    inf, sf = rows["infonce"]["reports"], rows["spatial_forcing"]["reports"]
    table = {
        "InfoNCE (fused RGB <-> points)": inf["aligned infonce"],
        "Spatial Forcing objective": sf["aligned spatial_forcing"],
        "ridge, raw features 2D -> 3D": inf["ridge 2d->3d"],
        "ridge, raw features 3D -> 2D": inf["ridge 3d->2d"],
        "InfoNCE, cross-batch pools": inf["aligned cross-batch"],
    }
    chance = inf["aligned infonce"]["retrieval"]["2d->3d"]["chance"]["1"]
    print(f"\nstage 1, held-out episodes, within-frame pools (chance top-1 {chance:.2%}):")
    print(f"{'row':34s} {'top-1 2D->3D':>13s} {'top-1 3D->2D':>13s} {'AUROC':>7s}")
    for name, rep in table.items():
        a, b, auc = _top1(rep)
        print(f"{name:34s} {a:13.2%} {b:13.2%} {auc:7.3f}")
    best_ridge = max(_top1(inf["ridge 2d->3d"])[0], _top1(inf["ridge 3d->2d"])[0])
    print(f"InfoNCE top-1 2D->3D / best ridge top-1: {_top1(inf['aligned infonce'])[0] / max(best_ridge, 1e-9):.2f}×")
    print(f"student (RGB only) -> stage-1 points: {rows['student']['summary']}")


def _stage2(args, root: Path) -> dict:
    results = {}
    path = root / "stage2.json"
    if path.is_file():
        results = json.loads(path.read_text())
    for source in args.sources.split(","):
        if source in results:
            continue
        cfg = HeadConfig(source=source, episodes=args.head_episodes, steps=args.head_steps)
        t0 = time.perf_counter()
        head = train_action_head(root / "infonce", root / f"head_{source}", cfg, student=root / "student")
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate_action_head(root / f"head_{source}", episodes=args.rollouts)
        lo, hi = res.interval
        results[source] = {
            "success": res.successes,
            "n": res.n,
            "interval": [lo, hi],
            "held_out_loss": head["held_out_loss"],
            "train_s": train_s,
            "rollout_s": time.perf_counter() - t0,
        }
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"stage 2 {source}: {res} (held-out loss {head['held_out_loss']:.4f})", flush=True)
    return results


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="align_evidence_"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    _print_stage1(_stage1(args, root))
    results = _stage2(args, root)
    print(f"\nstage 2, reach, {args.rollouts} rollouts per head on evaluation layouts:")
    print(f"{'source':10s} {'success':>8s} {'95% interval':>16s} {'held-out loss':>14s} {'× blind':>8s}")
    blind = results.get("blind", {}).get("success")
    for source, r in results.items():
        ratio = f"{r['success'] / blind:.2f}×" if blind else "n/a ×"
        (lo, hi), rate = r["interval"], r["success"] / r["n"]
        print(f"{source:10s} {rate:8.0%} [{lo:6.1%}, {hi:6.1%}] {r['held_out_loss']:14.4f} {ratio:>8s}")
    print(f"\noutputs under {root}")


if __name__ == "__main__":
    main()
