"""BAC on MetaWorld: caching schedules against their honest baselines on tasks where success is not a given.

Per task and averaged over tasks, one row per mode: original (DDPM, all steps); uniform and optimal
caching at S full updates, optimal with the Bubbling Union, uniform at the BU's compute; DDIM at
matched denoiser calls (S and 2S); **BAC on top of DDIM** (DDIM-2S and DDIM-5S, calibrated on their
own runs, cached down to S full calls); the uncached policy under ``torch.compile``. Columns: speed-up
of a ``predict_action`` call over the original at B=1 and batched, action error against the original
(same noise), and closed-loop success over ``--episodes`` rollouts with the Wilson 95% interval (the
batched MetaWorld evaluator, one policy call per control step). Needs the extra:
``pip install -e ".[metaworld]"``.

    python bench/bac_metaworld.py --out runs/bac_metaworld       # the 5 shipped tasks, 50 rollouts per row
    python bench/bac.py --suite metaworld --out runs/bac_metaworld   # the same
    python bench/bac_metaworld.py --smoke                        # one task, tiny sizes: a check, not a figure

Rows print as they finish; ``results.json`` under ``--out`` (default: a new temporary directory)
holds every number (``results.md`` the tables), and a rerun with the same ``--out`` skips the
(task, mode) cells already there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from policylens._intervals import wilson_interval
from policylens.accel import BACConfig, action_error, apply_cache, cache_info, calibrate, remove_cache

TASKS = "pick-place-v3,peg-insert-side-v3,assembly-v3,stick-pull-v3,shelf-place-v3"


class Mode:
    """A row: a caching config and/or predict_action keywords (sampler, steps), or the compiled model."""

    def __init__(self, name: str, config: BACConfig | None = None, compiled: bool = False, **kw) -> None:
        self.name, self.config, self.compiled, self.kw = name, config, compiled, kw
        n = kw.get("num_inference_steps")
        self.own = f"DDIM {n}" if kw.get("sampler") == "ddim" else "original (DDPM)"  # its uncached sampler

    def apply(self, policy, compiled):
        if self.config is not None:
            apply_cache(policy, self.config)
        if self.compiled:
            policy.model = compiled
        return self

    def remove(self, policy, eager) -> None:
        if self.config is not None:
            remove_cache(policy)
        policy.model = eager


def observations(task: str, policy, n: int, seed: int) -> torch.Tensor:
    """Observation windows (n, To, O) from expert episodes of ``task`` (layout seeds disjoint from training)."""
    from policylens.models.diffusion import make_windows
    from policylens.sim.metaworld import make_training_episodes

    eps = make_training_episodes(task, max(2, n // 40 + 1), seed=seed, progress=False)
    obs, _ = make_windows(eps, policy.config)
    idx = np.random.default_rng(seed).permutation(len(obs))[:n]
    return torch.from_numpy(obs[idx])


def ddim_run(steps: int):
    def run(policy, obs, g):
        policy.predict_action(obs, generator=g, sampler="ddim", num_inference_steps=steps)

    return run


def modes_for(policy, calib: torch.Tensor, updates: int, n_bu: int, compile_ok: bool) -> list[Mode]:
    K = policy.num_inference_steps
    kw = {"num_updates": updates, "batch_size": 8, "progress": False}
    cal = calibrate(policy, calib, n_bu=n_bu, **kw)
    modes = [
        Mode("original (DDPM)"),
        Mode(f"uniform S={updates}", BACConfig(mode="uniform", num_updates=updates)),
        Mode(f"optimal S={updates}", BACConfig(mode="optimal", calibration=cal, n_bu=0)),
        Mode(f"optimal S={updates} + BU({n_bu})", BACConfig(mode="optimal", calibration=cal, n_bu=n_bu)),
    ]
    apply_cache(policy, modes[-1].config)
    s_eq = round((1 - cache_info(policy)["skipped_fraction"]) * K)
    remove_cache(policy)
    if s_eq != updates:
        modes.append(Mode("uniform at the BU's compute", BACConfig(mode="uniform", num_updates=s_eq)))
    modes += [Mode(f"DDIM {n}", sampler="ddim", num_inference_steps=n) for n in (updates, 2 * updates, 5 * updates)]
    for n in (2 * updates, 5 * updates):
        if n <= K and n > updates:
            c = calibrate(policy, calib, run_fn=ddim_run(n), **kw)
            bac = BACConfig(mode="optimal", calibration=c, num_steps=n, n_bu=0)
            modes.append(Mode(f"DDIM {n} + BAC S={updates}", bac, sampler="ddim", num_inference_steps=n))
    if compile_ok:
        modes.append(Mode("original + torch.compile", compiled=True))
    return modes


def time_call(policy, obs: torch.Tensor, kw: dict, calls: int) -> float:
    g = torch.Generator()
    policy.predict_action(obs, generator=g.manual_seed(0), **kw)  # warm-up
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        policy.predict_action(obs, generator=g.manual_seed(0), **kw)
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def run_task(task: str, args, results: dict, save) -> None:
    from policylens.models import load_policy
    from policylens.sim import diffusion_agent
    from policylens.sim.metaworld import evaluate_metaworld, resolve_policy

    policy = load_policy(resolve_policy(args.policy, task)).eval()
    eager, compiled = policy.model, None
    if not args.no_compile:
        try:
            compiled = torch.compile(eager)
        except Exception as e:  # pragma: no cover - platform dependent
            print(f"torch.compile row skipped: {type(e).__name__}: {str(e)[:200]}")
    obs = observations(task, policy, args.calib_obs + args.batch, seed=7)
    calib, evo = obs[: args.calib_obs], obs[args.calib_obs :]
    modes = modes_for(policy, calib, args.num_updates, args.n_bu, compiled is not None)
    g = torch.Generator
    refs = {m.own: policy.predict_action(evo, generator=g().manual_seed(0), **m.kw) for m in modes if not m.config}
    rows = results.setdefault(task, {})
    todo = [m for m in modes if (m.name in rows) == args.retime]
    times: dict[str, dict[str, list[float]]] = {m.name: {"b1": [], "batch": []} for m in todo}
    for _ in range(args.rounds):  # interleaved, so a change in machine load hits every mode alike
        for m in todo:
            m.apply(policy, compiled)
            try:
                times[m.name]["b1"].append(time_call(policy, evo[:1], m.kw, args.calls))
                times[m.name]["batch"].append(time_call(policy, evo, m.kw, args.calls_batched))
            finally:
                m.remove(policy, eager)
    if args.retime:  # new timings for the rows already there; their errors and rollouts stay
        for m in todo:
            rows[m.name].update({f"s_{k}": float(np.median(times[m.name][k])) for k in ("b1", "batch")})
            rows[m.name]["timing_rounds"] = args.rounds
            save()
            print_row(task, m.name, rows[m.name], rows)
        return
    for m in todo:
        m.apply(policy, compiled)
        try:
            acts = policy.predict_action(evo, generator=torch.Generator().manual_seed(0), **m.kw)
            steps = m.kw.get("num_inference_steps", policy.num_inference_steps)
            row = {**action_error(refs["original (DDPM)"], acts), "steps": steps, "own": m.own}
            row["mse_own"] = action_error(refs[m.own], acts)["mse"]
            row["full_calls"] = steps * (1 - (cache_info(policy).get("skipped_fraction") or 0.0))
            row["s_b1"], row["s_batch"] = (float(np.median(times[m.name][k])) for k in ("b1", "batch"))
            if m.compiled:  # same actions as the original (to float rounding): a speed row, not rolled out again
                row.update(success=None, n=0, interval=None, eval_s=0.0)
            else:
                agent = diffusion_agent(policy, seed=0, noise="run", **m.kw)
                t0 = time.perf_counter()
                res = evaluate_metaworld(agent, task, episodes=args.episodes, batch=args.env_batch, progress=False)
                row.update(success=res.successes, n=res.n, interval=list(res.interval))
                row["eval_s"] = time.perf_counter() - t0
        finally:
            m.remove(policy, eager)
        rows[m.name] = row
        save()
        print_row(task, m.name, row, rows)


COLUMNS = (
    f"{'mode':32s} {'calls':>6s} {'× B=1':>7s} {'× batch':>8s} {'× own':>6s} {'MSE':>9s} {'MSE own':>9s} "
    f"{'success':>8s}  95% interval"
)


def speedups(rows: dict, row: dict) -> tuple[float, float, float]:
    """Speed-up over the task's original at B=1 and batched, and over the row's own uncached sampler at B=1."""
    base, own = next(iter(rows.values())), rows.get(row.get("own"), row)
    return base["s_b1"] / row["s_b1"], base["s_batch"] / row["s_batch"], own["s_b1"] / row["s_b1"]


def success_cell(k: int | None, n: int) -> str:
    if k is None:
        return f"{'—':>8s}  (same actions as the original; not rolled out)"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:8.0%}  [{lo:.0%}, {hi:.0%}]"


def _text_cells(ups, row: dict) -> str:
    b1, bb, own = ups
    return (
        f"{row['full_calls']:6.1f} {b1:6.2f}× {bb:7.2f}× {own:5.2f}× {row['mse']:9.2e} {row['mse_own']:9.2e} "
        f"{success_cell(row['success'], row['n'])}"
    )


def print_row(task: str, name: str, row: dict, rows: dict) -> None:
    print(f"{task:20s} {name:32s} " + _text_cells(speedups(rows, row), row), flush=True)


def mean_rows(results: dict, tasks: list[str]):
    """Per mode over ``tasks``: (name, speed-ups averaged over tasks, a row of mean calls and errors with
    the successes pooled)."""
    for name in dict.fromkeys(n for t in tasks for n in results.get(t, {})):
        cells = [(results[t][name], results[t]) for t in tasks if name in results.get(t, {})]
        row = {k: float(np.mean([c[k] for c, _ in cells])) for k in ("full_calls", "mse", "mse_own")}
        rolled = [c for c, _ in cells if c["success"] is not None]
        row["success"] = sum(c["success"] for c in rolled) if rolled else None
        row["n"] = sum(c["n"] for c in rolled)
        yield name, np.mean([speedups(rows, c) for c, rows in cells], axis=0), row


def summary(results: dict, tasks: list[str]) -> None:
    print(f"\nmean over {len(tasks)} tasks (speed-ups against each task's own rows; success pooled):")
    print(COLUMNS)
    for name, ups, row in mean_rows(results, tasks):
        print(f"{name:32s} " + _text_cells(ups, row))


def markdown(results: dict, tasks: list[str], batch: int) -> str:
    """The per-task rows and the mean over tasks as Markdown tables (``results.md`` under ``--out``)."""
    head = f"| full calls | × B=1 | × B={batch} | × own sampler | MSE | MSE own | success [95% CI] |"
    rule = "|---" * 9 + "|"
    lines = [f"| task | mode {head}", rule]
    for t in tasks:
        for name, row in results.get(t, {}).items():
            lines.append(f"| {t} | {name} | " + _md_cells(speedups(results[t], row), row))
    lines += ["", f"Mean over {len(tasks)} tasks (speed-ups against each task's own rows; successes pooled):", ""]
    lines += [f"| mode {head}", rule[4:]]
    lines += [f"| {name} | " + _md_cells(ups, row) for name, ups, row in mean_rows(results, tasks)]
    return "\n".join(lines) + "\n"


def _md_cells(ups, row: dict) -> str:
    b1, bb, own = ups
    k, n = row["success"], row["n"]
    if k is None:
        cell = "not rolled out (the original's actions)"
    else:
        lo, hi = wilson_interval(k, n)
        cell = f"{k}/{n} ({k / n:.0%}) [{lo:.0%}, {hi:.0%}]"
    return (
        f"{row['full_calls']:.1f} | {b1:.2f} | {bb:.2f} | {own:.2f} | {row['mse']:.2e} | {row['mse_own']:.2e} | "
        f"{cell} |"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default=TASKS, help="comma-separated MetaWorld tasks")
    ap.add_argument("--policy", default="metaworld", help="'metaworld' (shipped per-task policies) or a run folder")
    ap.add_argument("--num-updates", type=int, default=10, help="S: full denoiser calls of the cached rows")
    ap.add_argument("--n-bu", type=int, default=3)
    ap.add_argument("--calib-obs", type=int, default=48)
    ap.add_argument("--batch", type=int, default=25, help="batched timing size (= evaluator's environments)")
    ap.add_argument("--env-batch", type=int, default=50, help="environments stepped together in rollouts")
    ap.add_argument("--calls", type=int, default=10, help="timed calls per mode at B=1")
    ap.add_argument("--calls-batched", type=int, default=3, help="timed calls per mode at B=--batch")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (the median of their medians)")
    ap.add_argument("--episodes", type=int, default=50, help="rollouts per task and mode")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument(
        "--retime",
        action="store_true",
        help="time again the rows already in --out (e.g. on a quieter machine); errors and rollouts are kept",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true", help="one task, tiny sizes (a check, not a figure)")
    ap.add_argument("--suite", default="metaworld", help=argparse.SUPPRESS)  # accepted when called from bac.py
    args = ap.parse_args(argv)
    if args.smoke:
        args.tasks, args.calib_obs, args.batch, args.env_batch, args.calls, args.calls_batched = (
            "reach-v3",
            4,
            2,
            2,
            1,
            1,
        )
        args.episodes, args.no_compile, args.num_updates, args.n_bu = 2, True, 4, 1
    try:
        import metaworld  # noqa: F401
    except ImportError:
        print('MetaWorld is not installed: pip install -e ".[metaworld]". Nothing measured (0.00× rows).')
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-bac-metaworld-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    tasks = args.tasks.split(",")
    if args.smoke:
        args.policy = smoke_policy(out)
    save = lambda: path.write_text(json.dumps(results, indent=1) + "\n")  # noqa: E731
    print(f"{'task':20s} {COLUMNS}   (batch: B={args.batch}; MSE: against the original, own: its uncached sampler)")
    for task in tasks:
        run_task(task, args, results, save)
        (out / "results.md").write_text(markdown(results, tasks, args.batch))
    if args.smoke and not args.retime:  # the smoke run checks the --retime path too
        args.retime = True
        for task in tasks:
            run_task(task, args, results, save)
    summary(results, tasks)
    print(f"\nwrote {path} and {out / 'results.md'}")


def smoke_policy(out: Path) -> str:
    """A tiny untrained reach-v3 policy (the smoke run checks the rows run, not what they score)."""
    from policylens.models.diffusion import TinyDiffusionPolicy
    from policylens.models.diffusion._metaworld import metaworld_config

    path = out / "smoke_policy" / "reach-v3"
    if not (path / "config.json").is_file():
        cfg = metaworld_config(
            "reach-v3", n_layer=2, n_emb=16, n_head=2, num_train_timesteps=20, num_inference_steps=20
        )
        torch.manual_seed(0)
        TinyDiffusionPolicy(cfg).eval().save_pretrained(path)
    return str(path.parent)


if __name__ == "__main__":
    main()
