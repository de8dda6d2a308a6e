"""Benchmark retention fine-tuning on the reference VLA: fine-tune ``tiny_vla`` (trained on task A,
``reach``) on task B, and measure what each method keeps of task A.

Rows, one run per seed: plain fine-tuning; experience replay with 2% of task-A data; a
fixed-weight retention loss; PCGrad on {L_act, λ·L_ret}; CRaFT (A-GEM projection of conflicting
gradients + dual ascent), with and without that replay; and the same two with
``projection="active"`` (the step projected only while L_ret > ε: the rule that solves
min L_act s.t. L_ret ≤ ε). For each: task-B and task-A success (closed-loop rollouts, 95%
Wilson intervals), negative backward transfer (task-A success before − after), the final L_ret
against ε and the fraction of steps above it, bridge-feature drift over the whole cache, and the
step time as a ratio to plain fine-tuning's from the same run.

    python bench/retention.py                         # the full run: long on 2 CPU cores
    python bench/retention.py --steps 150 --eval-episodes 20
    python bench/retention.py --smoke                 # a minute: a check, not a figure
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from policylens.anchors import build_cache
from policylens.data import training_samples
from policylens.models import load_model
from policylens.retain import AnchorSet, RetainTrainConfig, RetentionConfig, retain_train, retention_loss
from policylens.sim import vla_agent
from policylens.sim.pybullet import evaluate_policy, generate_episodes, make_training_episodes

ROWS = [  # name, method, replay, projection
    ("plain", "plain", False, "conflict"),
    ("replay 2%", "plain", True, "conflict"),
    ("fixed weight", "fixed", False, "conflict"),
    ("PCGrad", "pcgrad", False, "conflict"),
    ("CRaFT", "craft", False, "conflict"),
    ("CRaFT + replay 2%", "craft", True, "conflict"),
    ("CRaFT (active)", "craft", False, "active"),
    ("CRaFT (active) + replay 2%", "craft", True, "active"),
]
NAMES = [row[0] for row in ROWS]


def episodes(task: str, n: int, seed: int, cfg) -> list[dict]:
    raw = make_training_episodes(
        task, n, seed=seed, render=True, image_size=cfg.image_size, cameras=cfg.cameras, progress=False
    )
    return training_samples(raw)


def success(model, task: str, n: int, seed: int, max_steps: int | None) -> dict | None:
    if n == 0:  # --eval-episodes 0: timing only
        return None
    agent = vla_agent(model.eval(), seed=seed)  # one batched call per step, noise seeded per episode
    cfg = model.config
    r = evaluate_policy(
        agent, task, n, seed, image_size=cfg.image_size, cameras=cfg.cameras, max_steps=max_steps, progress=False,
        batch=min(n, 10),
    )  # fmt: skip
    lo, hi = r.interval
    return {"rate": r.success_rate, "n": r.n, "low": lo, "high": hi}


@torch.no_grad()
def drift(model, cache: Path, batch: int = 16) -> float:
    """Mean L_ret (MSE) of ``model``'s bridge features against the whole cache."""
    anchors = AnchorSet(cache, model.eval())
    total, n = 0.0, 0
    for start in range(0, len(anchors), batch):
        rows = list(range(start, min(start + batch, len(anchors))))
        b = anchors.batch(rows)
        inputs = {k: v for k, v in b.items() if k not in ("target_features", "sample_index")}
        feats = anchors.student(inputs, indices=b["sample_index"])["target_features"]
        total += float(retention_loss(feats, b["target_features"])) * len(rows)
        n += len(rows)
    return total / n


def run_seed(args, seed: int, work: Path) -> list[dict]:
    teacher = load_model("tiny_vla")
    cfg = teacher.config
    cache = work / f"cache{seed}"
    if args.smoke:
        dataset = "synthetic:8"
    else:
        generate_episodes(
            "reach",
            args.anchor_episodes,
            work / f"reach{seed}",
            seed=seed,
            fmt="droid",
            image_size=cfg.image_size,
            progress=False,
        )
        dataset = f"droid:{work / f'reach{seed}'}"
    build_cache("tiny_vla", dataset, str(cache), kind="bridge", batch_size=16, progress=False)
    task_b = episodes(args.task_b, args.episodes_b, seed, cfg)
    replay_n = max(1, round(0.02 * args.teacher_episodes))
    replay = episodes("reach", replay_n, seed + 7919, cfg)
    n_before = 0 if args.skip_before else args.eval_episodes
    before = {
        "A": success(load_model("tiny_vla"), "reach", n_before, seed, args.max_steps),
        "B": success(load_model("tiny_vla"), args.task_b, n_before, seed, args.max_steps),
    }
    rows = []
    chosen = rows_chosen(args.rows)
    for name, method, with_replay, projection in [r for r in ROWS if r[0] in chosen]:
        train = RetainTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            anchor_batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            save_every=max(args.steps, 1),
            warmup=min(20, args.steps),
        )
        lam = args.lam if method in ("fixed", "pcgrad") else 0.0
        retention = RetentionConfig(
            epsilon=args.epsilon, method=method, lam=lam, lam_lr=args.lam_lr, projection=projection
        )
        folder = name.replace(" ", "_").replace("%", "pct").replace("+", "and").replace("(", "").replace(")", "")
        out = work / f"seed{seed}" / folder
        t0 = time.perf_counter()
        summary = retain_train("tiny_vla", cache, task_b + (replay if with_replay else []), out, train, retention)
        seconds = time.perf_counter() - t0
        tuned = load_model(str(out))
        rows.append(
            {
                "row": name,
                "projection": projection if method in ("agem", "craft") else None,
                "seed": seed,
                "step_s": seconds / args.steps,
                "B": success(tuned, args.task_b, args.eval_episodes, seed, args.max_steps),
                "A": success(load_model(str(out)), "reach", args.eval_episodes, seed, args.max_steps),
                "A_before": before["A"],
                "B_before": before["B"],
                "drift": drift(tuned, cache),
                "first_loss_act": summary.get("first_loss_act"),
                "final_loss_act": summary["final_loss_act"],
                "final_loss_ret": summary["final_loss_ret"],
                "above_epsilon": summary["above_epsilon"],
                "lambda": summary["lambda"],
                "projection_fired": summary["projection_fired"],
                "cos_dtheta_ret": summary["cos_dtheta_ret_mean"],
            }
        )
        print(f"seed {seed} {name}: {json.dumps(rows[-1])}", flush=True)
    plain = next((r["step_s"] for r in rows if r["row"] == "plain"), None)
    for r in rows:
        r["step_ratio"] = r["step_s"] / plain if plain else None
        both = r["A_before"] is not None and r["A"] is not None
        r["nbt"] = r["A_before"]["rate"] - r["A"]["rate"] if both else None
    return rows


def rows_chosen(spec: str | None) -> list[str]:
    """``--rows``: comma-separated names (default: every row); an unknown name stops before any work."""
    chosen = [r.strip() for r in spec.split(",")] if spec else list(NAMES)
    unknown = sorted(set(chosen) - set(NAMES))
    if unknown:
        raise SystemExit(f"--rows: {unknown} are not rows; choose from {NAMES}")
    return chosen


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def pct(s: dict | None) -> str:
    return "—" if s is None else f"{s['rate']:.0%} [{s['low']:.0%}, {s['high']:.0%}]"


def table(rows: list[dict], epsilon: float) -> str:
    lines = [
        f"| row | seed | task B success | task A success | NBT (A before − after) | L_act first → last "
        f"| final L_ret (ε={epsilon:g}) "
        "| steps above ε | drift | λ | projection fired | cos(Δθ, g_ret) | step time × plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['seed']} | {pct(r['B'])} | {pct(r['A'])} | {fmt(r['nbt'], '+.0%')} | "
            f"{fmt(r.get('first_loss_act'), '.3g')} → {fmt(r.get('final_loss_act'), '.3g')} | "
            f"{fmt(r['final_loss_ret'], '.3g')} | {fmt(r['above_epsilon'], '.0%')} | {r['drift']:.3g} | "
            f"{r['lambda']:.3g} | {fmt(r['projection_fired'], '.0%')} | {fmt(r.get('cos_dtheta_ret'), '+.2f')} | "
            f"{fmt(r['step_ratio'], '.2f')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--out", help="folder for results.json, retention.md and the runs (default: a temp dir)")
    ap.add_argument("--task-b", default="put_in_tray")
    ap.add_argument("--episodes-b", type=int, default=40, help="expert episodes of task B")
    ap.add_argument("--anchor-episodes", type=int, default=20, help="task-A episodes the bridge cache covers")
    ap.add_argument("--teacher-episodes", type=int, default=200, help="the teacher's task-A training set (for 2%%)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epsilon", type=float, default=0.02)
    ap.add_argument("--lam", type=float, default=1.0, help="the fixed weight (fixed weight, PCGrad)")
    ap.add_argument("--lam-lr", type=float, default=20.0)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on rollout steps (default: the task's)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rows", help="comma-separated row names to run (default: all)")
    ap.add_argument("--skip-before", action="store_true", help="skip the teacher's own success (another run has it)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady step times on shared cores)")
    args = ap.parse_args(argv)
    rows_chosen(args.rows)  # an unknown row name fails before the episodes are recorded
    if args.smoke:
        args.episodes_b, args.steps, args.batch_size, args.eval_episodes, args.max_steps = 1, 2, 2, 1, 4
        args.teacher_episodes = 50
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}", flush=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-retention-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for seed in range(args.seeds) for r in run_seed(args, seed, out)]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    text = table(rows, args.epsilon)
    (out / "retention.md").write_text(text + "\n")
    print(text)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
