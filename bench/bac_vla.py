"""Benchmark BAC on a flow-matching VLA's action expert (TinyVLA): caching against fewer flow steps.

Rows, each from one run: the original 10 flow steps; 5, 3, 2 and 1 flow steps (uncached); BAC on
the 10 steps (uniform S=5, optimal S=5, optimal S=3); BAC on 5 flow steps (optimal S=3 of 5).
For each: time per action chunk split into the PaliGemma prefix (once per chunk) and the action
expert (all flow steps), at B=1 and batched, as ratios over the original from the same run; action
error against the original on held-out observations, on the whole chunk and on the executed part
(the first chunk_size // 2 actions, what the agent runs); closed-loop reach success on held-out
layouts with the batched evaluator, Wilson 95% intervals, and how many episodes differ from the
original's outcome (every row sees the same layouts and the same per-episode noise).

    python bench/bac_vla.py                          # default sizes: 80 episodes per row (~14 min on 2 cores)
    python bench/bac_vla.py --episodes 40            # fewer rollouts per row (~7 min)
    python bench/bac_vla.py --episodes 0             # time and action error only (~2 min)
    python bench/bac_vla.py --smoke                  # every row at a tiny size: checks, not figures

Outputs (both calibrations, results.json) go to ``--out``, or to a fresh temporary directory.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from policylens.accel import BACConfig, cache_context, cache_info, calibrate, compare_modes, evaluate_mode
from policylens.data import robot_state
from policylens.models import load_model
from policylens.sim import vla_agent
from policylens.sim._seeds import eval_layout_seed
from policylens.sim.pybullet import ExpertPolicy, SimEnv, evaluate_policy, render_settings

CAL_SEED = 7  # calibration / error observations: layouts of evaluation seed 7; the rollouts use seed 0


def sim_observations(model, n: int, stride: int = 4) -> list[dict]:
    """``n`` observations of scripted-expert reach episodes on held-out layouts, every ``stride`` steps,
    rendered at the policy's image size and cameras."""
    cfg = model.config
    out: list[dict] = []
    with SimEnv("reach", image_size=cfg.image_size, cameras=cfg.cameras) as env:
        expert, i = ExpertPolicy(env), 0
        while len(out) < n:
            obs, done, t = env.reset(seed=eval_layout_seed(CAL_SEED, i)), False, 0
            expert.reset()
            while not done and t < env.task.max_steps and len(out) < n:
                if t % stride == 0:
                    out.append(obs)
                obs, done, _ = env.step(expert.act(obs))
                t += 1
            i += 1
    return out


def to_batch(model, observations: list[dict]) -> dict[str, torch.Tensor]:
    images = {c: torch.from_numpy(np.stack([o["images"][c] for o in observations])) for c in model.config.cameras}
    state = torch.from_numpy(np.stack([robot_state(o) for o in observations]))
    return model.make_batch(images, [o["instruction"] for o in observations], state)


def rows_of(cal10, cal5) -> dict[str, tuple[BACConfig | None, dict]]:
    """Row name -> (BACConfig or None, sample_actions kwargs); the original first."""
    rows: dict[str, tuple[BACConfig | None, dict]] = {"original (10 steps)": (None, {})}
    for k in (5, 3, 2, 1):
        rows[f"{k} flow step{'s' if k > 1 else ''}"] = (None, {"steps": k})
    rows["10 steps + uniform S=5"] = (BACConfig(mode="uniform", num_updates=5), {})
    rows["10 steps + optimal S=5"] = (BACConfig(mode="optimal", calibration=cal10), {})
    rows["10 steps + optimal S=3"] = (BACConfig(mode="optimal", calibration=cal10, num_updates=3), {})
    rows["5 steps + optimal S=3"] = (BACConfig(mode="optimal", calibration=cal5, num_steps=5), {"steps": 5})
    return rows


def full_passes(model, config, kwargs) -> float:
    """Expert passes per chunk in branch evaluations: steps x (1 - skipped fraction)."""
    steps = kwargs.get("steps", model.config.flow_steps)
    if config is None:
        return float(steps)
    with cache_context(model, config):
        return steps * (1.0 - cache_info(model)["skipped_fraction"])


def timings(model, rows, batches: dict[int, dict], rounds: dict[int, int]) -> dict:
    """Per row and batch size: medians over ``rounds`` single calls, the rows interleaved call by call
    (evaluate_mode with one timed call each), so that other work on a shared machine, which comes and
    goes over seconds, falls on every row alike."""
    refs = {b: model.sample_actions(batch, generator=torch.Generator().manual_seed(0)) for b, batch in batches.items()}
    acc: dict = {}
    for b, batch in batches.items():
        for _ in range(rounds[b]):
            for name, (config, kw) in rows.items():
                row = evaluate_mode(model, config, batch, calls=1, warmup=0, reference=refs[b], **kw)
                cell = acc.setdefault(name, {}).setdefault(b, {})
                for key in ("median_ms", "prefix_ms", "expert_ms"):
                    cell.setdefault(key, []).append(row[key])
        print(f"timing at B={b} done ({rounds[b]} interleaved calls per row)", flush=True)
    return {m: {b: {k: float(np.median(v)) for k, v in c.items()} for b, c in per.items()} for m, per in acc.items()}


def rollouts(model, config, kwargs, episodes: int, batch: int, max_steps: int | None):
    agent = vla_agent(model, seed=0, **kwargs)
    settings = render_settings(agent)
    if config is None:
        return evaluate_policy(
            agent, "reach", episodes=episodes, batch=batch, max_steps=max_steps, progress=False, **settings
        )
    with cache_context(model, config):
        return evaluate_policy(
            agent, "reach", episodes=episodes, batch=batch, max_steps=max_steps, progress=False, **settings
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default="tiny_vla", help="a TinyVLA checkpoint (default: the shipped one)")
    ap.add_argument("--episodes", type=int, default=80, help="closed-loop episodes per row (one batch; 0: none)")
    ap.add_argument("--calib-obs", type=int, default=64, help="calibration observations (expert, held-out layouts)")
    ap.add_argument("--error-obs", type=int, default=32, help="held-out observations for the action error")
    ap.add_argument("--batch", type=int, default=8, help="the batched timing's batch size")
    ap.add_argument("--calls", type=int, default=40, help="timed calls per row at B=1, interleaved with the others")
    ap.add_argument("--calls-batched", type=int, default=12, help="timed calls per row at B=--batch, interleaved")
    ap.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the task's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a busy 2-core box)")
    ap.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (a check, not a figure)")
    args = ap.parse_args()
    if args.smoke:
        args.episodes, args.calib_obs, args.error_obs, args.batch, args.calls, args.calls_batched = 2, 4, 2, 2, 1, 1
        args.max_steps = 4
    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-bac-vla-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = load_model(args.policy).eval()
    cfg = model.config
    observations = sim_observations(model, args.calib_obs + args.error_obs)
    calib, held_out = to_batch(model, observations[: args.calib_obs]), to_batch(model, observations[args.calib_obs :])
    t0 = time.perf_counter()
    cal10 = calibrate(model, calib, num_updates=5, batch_size=8, progress=False)
    cal5 = calibrate(
        model,
        calib,
        num_updates=3,
        batch_size=8,
        progress=False,
        run_fn=lambda p, o, g: p.sample_actions(o, generator=g, steps=5),
    )
    calib_s = time.perf_counter() - t0
    cal10.save(out / "calibration_10_steps.json")
    cal5.save(out / "calibration_5_steps.json")
    rows = rows_of(cal10, cal5)
    names = list(rows)

    configs = {name: config for name, (config, _) in rows.items()}
    kwargs = {name: kw for name, (_, kw) in rows.items() if kw}
    errors = {r["mode"]: r for r in compare_modes(model, configs, held_out, calls=1, warmup=0, predict_kwargs=kwargs)}
    batches = {1: take(held_out, 1), args.batch: take(held_out, args.batch)}
    times = timings(model, rows, batches, {1: args.calls, args.batch: args.calls_batched})

    results = {}
    for name, (config, kw) in rows.items() if args.episodes > 0 else ():
        t1 = time.perf_counter()
        res = rollouts(model, config, kw, args.episodes, args.episodes, args.max_steps)
        results[name] = res
        print(f"{name}: {res.successes}/{res.n} in {time.perf_counter() - t1:.0f} s", flush=True)

    base = times[names[0]]
    B = args.batch
    print(
        f"\nBAC on TinyVLA's action expert ({cfg.layers} Gemma layers, width {cfg.expert_width}, image "
        f"{cfg.image_size}, chunk {cfg.chunk_size}, executed {max(1, cfg.chunk_size // 2)}), {torch.get_num_threads()} "
        f"torch thread(s); calibration {cal10.num_samples} expert observations in {calib_s:.0f} s; action error "
        f"on {args.error_obs} held-out observations; {args.episodes} reach episodes per row (held-out layouts); "
        f"times: medians of {args.calls} calls at B=1 and {args.calls_batched} at B={B}, rows interleaved\n"
    )
    header = (
        "| mode | expert passes | B=1 ms = prefix + steps × expert step | × e2e B=1 | × expert B=1 | "
        f"B={B} ms = prefix + steps × expert step | × e2e B={B} | × expert B={B} | MSE chunk | MSE executed | "
        "success [95% CI] | differs |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    table = []
    for name, (config, kw) in rows.items():
        t, e, res = times[name], errors[name], results.get(name)
        steps = kw.get("steps", cfg.flow_steps)
        if res is None:
            lo = hi = differs = None
            success = "not rolled out"
        else:
            lo, hi = res.interval
            first = results[names[0]].episode_success
            differs = sum(a != b for a, b in zip(res.episode_success, first, strict=True))
            success = f"{res.successes}/{res.n} ({res.success_rate:.0%}) [{lo:.0%}, {hi:.0%}]"
        row = {
            "mode": name,
            "expert_passes": full_passes(model, config, kw),
            "ms": {b: t[b]["median_ms"] for b in t},
            "prefix_ms": {b: t[b]["prefix_ms"] for b in t},
            "expert_ms": {b: t[b]["expert_ms"] for b in t},
            "speedup": {b: base[b]["median_ms"] / t[b]["median_ms"] for b in t},
            "expert_speedup": {b: base[b]["expert_ms"] / t[b]["expert_ms"] for b in t},
            "mse": e["mse"],
            "mse_executed": e["mse_executed"],
            "max_abs_executed": e["max_abs_executed"],
            "success": None if res is None else [res.successes, res.n, lo, hi],
            "differs_from_original": differs,
        }
        table.append(row)
        split = {
            b: f"{t[b]['median_ms']:.1f} = {t[b]['prefix_ms']:.1f} + {steps} × {t[b]['expert_ms'] / steps:.2f}"
            for b in t
        }
        print(
            f"| {name} | {row['expert_passes']:.1f} | {split[1]} | {row['speedup'][1]:.2f} | "
            f"{row['expert_speedup'][1]:.2f} | {split[B]} | {row['speedup'][B]:.2f} | {row['expert_speedup'][B]:.2f} | "
            f"{e['mse']:.2e} | {e['mse_executed']:.2e} | {success} | {'-' if differs is None else differs} |"
        )
    schedules = {"10 steps, S=5": cal10.schedule, "5 steps, S=3": cal5.schedule}
    (out / "results.json").write_text(json.dumps({"rows": table, "schedules": schedules, "args": vars(args)}, indent=1))
    print(f"\nschedules (update steps per expert branch): {json.dumps(schedules)}")
    print(f"wrote {out}/results.json and both calibrations in {time.perf_counter() - started:.0f} s")


def take(batch: dict, n: int) -> dict:
    return {k: v[:n] for k, v in batch.items()}


if __name__ == "__main__":
    main()
