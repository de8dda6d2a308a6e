"""Benchmark retention fine-tuning on the reference VLA: fine-tune ``tiny_vla`` (trained on task A,
``reach``) on task B, and measure what each method keeps of task A and what each step costs.

Rows, the same steps, data and seeds each: plain fine-tuning; experience replay with 2% and 10% of
task-A data (episodes mixed in whole and sampled like task B's), and the 2% as a share of every batch's
rows (one row, or a quarter: ``replay_fraction``); action distillation (the teacher's predicted
velocities on the anchors as targets, ``method="fixed"`` on the cache's action output); a fixed-weight
retention loss; PCGrad on {L_act, λ·L_ret}; CRaFT (dual ascent) with ``projection="conflict"`` and ``"active"``; CRaFT +
replay 2%; and the step-cost variants of CRaFT: the retention pass every 2 / 4 steps
(``retain_every``) and an anchor batch a quarter of the task batch. For each row and seed: task-B
and task-A success (closed-loop rollouts, 95% Wilson intervals), success on the teacher's other skills
(``reach`` naming another object on task B's training layouts), negative backward transfer (task-A
success before − after), the final L_ret against ε and the fraction of retention steps above it,
bridge-feature drift over the whole cache, λ, and the step time as a ratio to plain fine-tuning's
from the same run (from the training loop's own per-step log times: setup, the anchors' one-time
decoding and evaluation excluded). Then each row over the seeds (episodes pooled: Wilson interval;
the seeds' range beside it) and a plot of task-A against task-B success, one point per row and seed
(``retention.png``). ``--bridge`` picks the bridge the retention rows hold (default, flow steps
0,4,9, unpooled tokens, or with the action output).

    python bench/retention.py --seeds 0,1,2             # the full run: long on 2 CPU cores
    python bench/retention.py --steps 150 --eval-episodes 20
    python bench/retention.py --smoke                   # a minute: a check, not a figure
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from policylens._intervals import wilson_interval
from policylens.anchors import build_cache
from policylens.data import training_samples
from policylens.models import load_model
from policylens.retain import AnchorSet, RetainTrainConfig, RetentionConfig, retain_train, retention_loss
from policylens.sim import vla_agent
from policylens.sim.pybullet import evaluate_policy, generate_episodes, get_task, layout_seed, make_training_episodes

ROWS = {  # name: method, replay fraction of the teacher's data, projection, other settings
    "plain": ("plain", 0.0, "conflict", {}),
    "replay 2%": ("plain", 0.02, "conflict", {}),
    "replay 10%": ("plain", 0.10, "conflict", {}),
    "replay 2% as 1 row": ("plain", 0.02, "conflict", {"replay_rows": 1}),
    "replay 2% as B/4 rows": ("plain", 0.02, "conflict", {"replay_rows": "B/4"}),
    "action distillation": ("fixed", 0.0, "conflict", {"anchor_features": "action"}),
    "fixed weight": ("fixed", 0.0, "conflict", {}),
    "PCGrad": ("pcgrad", 0.0, "conflict", {}),
    "CRaFT (conflict)": ("craft", 0.0, "conflict", {}),
    "CRaFT (active)": ("craft", 0.0, "active", {}),
    "CRaFT + replay 2%": ("craft", 0.02, "conflict", {}),
    "CRaFT every 2": ("craft", 0.0, "conflict", {"retain_every": 2}),
    "CRaFT every 4": ("craft", 0.0, "conflict", {"retain_every": 4}),
    "CRaFT anchors B/4": ("craft", 0.0, "conflict", {"anchor_div": 4}),
    "CRaFT anchors B/4 every 2": ("craft", 0.0, "conflict", {"anchor_div": 4, "retain_every": 2}),
}
NAMES = list(ROWS)
BRIDGES = {  # --bridge: the cache options of the retention rows' bridge
    "default": None,
    "flow-steps": {"flow_steps": (0, 4, 9)},
    "tokens": {"pooling": "none"},
    "action": {"action": True},
}


def episodes(task: str, n: int, seed: int, cfg) -> list[dict]:
    raw = make_training_episodes(
        task, n, seed=seed, render=True, image_size=cfg.image_size, cameras=cfg.cameras, progress=False
    )
    return training_samples(raw)


def other_layouts(n: int, seed: int) -> list[tuple[int, int]]:
    """The teacher's other skills: ``reach`` on the layouts of task B's first ``n`` training episodes
    (``layout_seed(seed, i)``; with ``hover`` the very scenes the fine-tune saw), each naming another
    object than the layout's own target (the next one), an instruction the fine-tune never saw."""
    reach = get_task("reach")
    plan = []
    for i in range(n):
        spec = reach.sample(np.random.default_rng(layout_seed(seed, i)))
        plan.append((layout_seed(seed, i), (spec.target + 1) % len(spec.objects)))
    return plan


def success(model, task: str, n: int, seed: int, max_steps: int | None, layouts=None) -> dict | None:
    if n == 0:  # --eval-episodes 0: timing only
        return None
    agent = vla_agent(model.eval(), seed=seed)  # one batched call per step, noise seeded per episode
    cfg = model.config
    r = evaluate_policy(
        agent, task, n, seed, image_size=cfg.image_size, cameras=cfg.cameras, max_steps=max_steps, progress=False,
        batch=min(n, 10), layouts=layouts,
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


def step_seconds(run: Path) -> float | None:
    """Mean seconds per training step, from the wall times of the loop's own ``train/loss`` log
    (one event after each step): setup, the anchors' one-time decoding and evaluation excluded. A
    mean, not a median: with ``retain_every`` the steps alternate between two costs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb")).Reload().Scalars("train/loss")
    times = np.diff([e.wall_time for e in events])
    return float(np.mean(times)) if len(times) else None


def replay_share(rows: int | str | None, batch_size: int) -> float:
    """A row's ``replay_rows`` (rows of each batch: a count, or ``"B/4"``) as ``replay_fraction``; 0 for none."""
    if rows is None:
        return 0.0
    count = max(1, batch_size // 4) if rows == "B/4" else int(rows)
    return count / batch_size


def make_cache(cache: Path, dataset: str, options: dict | None) -> Path:
    if not (cache / "manifest.json").is_file():
        build_cache("tiny_vla", dataset, str(cache), kind="bridge", batch_size=16, progress=False, bridge=options)
    return cache


def run_seed(args, seed: int, work: Path) -> list[dict]:
    teacher = load_model("tiny_vla")
    cfg = teacher.config
    chosen = rows_chosen(args.rows)
    if args.smoke:
        dataset = "synthetic:8"
    else:
        generate_episodes("reach", args.anchor_episodes, work / f"reach{seed}", seed=seed, fmt="droid",
                          image_size=cfg.image_size, progress=False)  # fmt: skip
        dataset = f"droid:{work / f'reach{seed}'}"
    cache = make_cache(work / f"cache{seed}_{args.bridge}", dataset, BRIDGES[args.bridge])
    action_cache = None
    if "action distillation" in chosen:  # the action output: this cache's, or a cache of its own
        action_cache = cache if args.bridge == "action" else make_cache(work / f"cache{seed}_action", dataset,
                                                                         BRIDGES["action"])  # fmt: skip
    task_b = episodes(args.task_b, args.episodes_b, seed, cfg)
    fractions = sorted({ROWS[n][1] for n in chosen if ROWS[n][1] > 0})
    replay_all = episodes("reach", max(1, round(max(fractions, default=0) * args.teacher_episodes)), seed + 7919, cfg)
    n_before = 0 if args.skip_before else args.eval_episodes
    n_other = min(args.other_episodes, args.episodes_b)
    others = other_layouts(n_other, seed)
    before = {  # evaluation reads the weights only: one teacher serves every task
        "A": success(teacher, "reach", n_before, seed, args.max_steps),
        "B": success(teacher, args.task_b, n_before, seed, args.max_steps),
        "other": success(teacher, "reach", n_other if n_before else 0, seed, args.max_steps, others),
    }
    rows = []
    for name in chosen:
        method, fraction, projection, extra = ROWS[name]
        anchor_batch = max(1, (args.anchor_batch_size or args.batch_size) // extra.get("anchor_div", 1))
        train = RetainTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            anchor_batch_size=anchor_batch,
            lr=args.lr,
            seed=seed,
            save_every=max(args.steps, 1),
            warmup=min(20, args.steps),
            retain_every=extra.get("retain_every", 1),
            anchor_features=extra.get("anchor_features", "all"),
            log_every=args.log_every,
            replay_fraction=replay_share(extra.get("replay_rows"), args.batch_size),
        )
        lam = args.lam if method in ("fixed", "pcgrad") else 0.0
        retention = RetentionConfig(
            epsilon=args.epsilon, method=method, lam=lam, lam_lr=args.lam_lr, projection=projection
        )
        folder = "".join(c if c.isalnum() else "_" for c in name)
        out = work / f"seed{seed}" / folder
        replay = replay_all[: max(1, round(fraction * args.teacher_episodes))] if fraction else []
        anchors = action_cache if extra.get("anchor_features") == "action" else cache
        if train.replay_fraction:  # the replay rows: a share of every batch
            summary = retain_train("tiny_vla", anchors, task_b, out, train, retention, replay=replay)
        else:
            summary = retain_train("tiny_vla", anchors, task_b + replay, out, train, retention)
        tuned = load_model(str(out))
        rows.append(
            {
                "row": name,
                "projection": projection if method in ("agem", "craft") else None,
                "seed": seed,
                "bridge": args.bridge,
                "anchor_batch_size": anchor_batch if method != "plain" else None,
                "retain_every": train.retain_every,
                "step_s": step_seconds(out),
                "B": success(tuned, args.task_b, args.eval_episodes, seed, args.max_steps),
                "A": success(tuned, "reach", args.eval_episodes, seed, args.max_steps),
                "other": success(tuned, "reach", n_other, seed, args.max_steps, others),
                "A_before": before["A"],
                "B_before": before["B"],
                "other_before": before["other"],
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
        r["step_ratio"] = r["step_s"] / plain if plain and r["step_s"] else None
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


def seeds_of(spec: str) -> list[int]:
    """``--seeds 0,1,2``: the seeds, each row run once per seed."""
    try:
        seeds = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SystemExit(f"--seeds={spec!r}: give distinct whole numbers >= 0, comma-separated (e.g. 0,1,2)")
    return seeds


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def pct(s: dict | None) -> str:
    return "—" if s is None else f"{s['rate']:.0%} [{s['low']:.0%}, {s['high']:.0%}]"


def table(rows: list[dict], epsilon: float) -> str:
    lines = [
        f"| row | seed | task B success | task A success | NBT (A before − after) | other skills "
        "| L_act first → last "
        f"| final L_ret (ε={epsilon:g}) "
        "| retention steps above ε | drift | λ | projection fired | cos(Δθ, g_ret) | step time × plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['seed']} | {pct(r['B'])} | {pct(r['A'])} | {fmt(r['nbt'], '+.0%')} | "
            f"{pct(r.get('other'))} | "
            f"{fmt(r.get('first_loss_act'), '.3g')} → {fmt(r.get('final_loss_act'), '.3g')} | "
            f"{fmt(r['final_loss_ret'], '.3g')} | {fmt(r['above_epsilon'], '.0%')} | {r['drift']:.3g} | "
            f"{fmt(r['lambda'], '.3g')} | {fmt(r['projection_fired'], '.0%')} | "
            f"{fmt(r.get('cos_dtheta_ret'), '+.2f')} | {fmt(r['step_ratio'], '.2f')} |"
        )
    return "\n".join(lines)


def pooled(results: list[dict | None]) -> str:
    """Success over every seed's episodes (Wilson interval on the pooled count) and the seeds' range."""
    results = [r for r in results if r is not None]
    if not results:
        return "—"
    k, n = sum(round(r["rate"] * r["n"]) for r in results), sum(r["n"] for r in results)
    lo, hi = wilson_interval(k, n)
    rates = [r["rate"] for r in results]
    return f"{k / n:.0%} [{lo:.0%}, {hi:.0%}] (seeds {min(rates):.0%}–{max(rates):.0%})"


def aggregate(rows: list[dict]) -> str:
    """Each row over the seeds: pooled success, mean NBT, mean drift and step-time ratio (range)."""
    lines = [
        "| row | seeds | task B success | task A success | NBT mean | other skills | drift mean | final L_ret mean "
        "| λ mean | step time × plain (range) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["row"] for r in rows):
        mine = [r for r in rows if r["row"] == name]

        def mean(key, mine=mine):
            values = [r[key] for r in mine if r[key] is not None]
            return float(np.mean(values)) if values else None

        ratios = [r["step_ratio"] for r in mine if r["step_ratio"] is not None]
        spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
        lines.append(
            f"| {name} | {len(mine)} | {pooled([r['B'] for r in mine])} | {pooled([r['A'] for r in mine])} | "
            f"{fmt(mean('nbt'), '+.0%')} | {pooled([r.get('other') for r in mine])} | "
            f"{fmt(mean('drift'), '.3g')} | {fmt(mean('final_loss_ret'), '.3g')} | "
            f"{fmt(mean('lambda'), '.3g')} | {fmt(mean('step_ratio'), '.2f')}×{spread} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path | None:
    """Task-A against task-B success, one point per row and seed (PNG)."""
    points = [r for r in rows if r["A"] is not None and r["B"] is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    names = list(dict.fromkeys(r["row"] for r in points))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 2)))
    for name, colour in zip(names, colours, strict=False):
        mine = [r for r in points if r["row"] == name]
        ax.scatter([r["B"]["rate"] for r in mine], [r["A"]["rate"] for r in mine], color=colour, label=name, s=30)
    before = next((r["A_before"] for r in points if r["A_before"] is not None), None)
    if before is not None:
        ax.axhline(before["rate"], color="grey", linestyle="--", linewidth=1, label="teacher on task A")
    ax.set(xlabel="task-B success", ylabel="task-A success", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from policylens.sim.pybullet import TASKS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--out", help="folder for results.json, retention.md, retention.png and the runs (default: temp)")
    ap.add_argument("--task-b", default="put_in_tray", choices=sorted(TASKS))
    ap.add_argument("--episodes-b", type=int, default=40, help="expert episodes of task B")
    ap.add_argument("--anchor-episodes", type=int, default=20, help="task-A episodes the bridge cache covers")
    ap.add_argument("--teacher-episodes", type=int, default=200, help="the teacher's task-A training set (replay %%)")
    ap.add_argument("--bridge", default="default", choices=list(BRIDGES), help="the retention rows' bridge")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--anchor-batch-size", type=int, default=None, help="default: the task batch size")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epsilon", type=float, default=0.02)
    ap.add_argument("--lam", type=float, default=1.0, help="the fixed weight (fixed weight, PCGrad, distillation)")
    ap.add_argument("--lam-lr", type=float, default=20.0)
    ap.add_argument("--log-every", type=int, default=10, help="steps between cos(Δθ, g_ret) readings")
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument(
        "--other-episodes",
        type=int,
        default=20,
        help="reach episodes naming another object on task B's training layouts (the other skills)",
    )
    ap.add_argument("--max-steps", type=int, default=None, help="cap on rollout steps (default: the task's)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (each row once per seed)")
    ap.add_argument("--rows", help="comma-separated row names to run (default: all)")
    ap.add_argument("--skip-before", action="store_true", help="skip the teacher's own success (another run has it)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady step times on shared cores)")
    args = ap.parse_args(argv)
    rows_chosen(args.rows)  # an unknown row name fails before the episodes are recorded
    seeds = seeds_of(args.seeds)
    if args.smoke:
        args.episodes_b, args.steps, args.batch_size, args.eval_episodes, args.max_steps = 1, 3, 4, 1, 4
        args.teacher_episodes = 50
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}", flush=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-retention-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for seed in seeds for r in run_seed(args, seed, out)]
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    text = table(rows, args.epsilon) + "\n\nOver the seeds:\n\n" + aggregate(rows)
    (out / "retention.md").write_text(text + "\n")
    print(text)
    picture = plot(rows, out / "retention.png")
    print(f"results in {out}" + (f"; plot {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
