"""Benchmark BAC on the reference diffusion policy: speed, action error and closed-loop success.

One run prints every row side by side: original; uniform at equal compute; optimal S with and
without the Bubbling Union; DDIM with S full denoiser calls; uncached under ``torch.compile``.
Every mode uses identical initial and per-step noise (seeded ``torch.Generator``).

    python bench/bac.py                                  # default sizes (~10 min on 2 CPU cores)
    python bench/bac.py --calls 100 --calls-batched 100 --episodes 50 --calib-obs 128   # full sizes
    python bench/bac.py --smoke                          # every row at a tiny size (seconds): checks, not figures
    python bench/bac.py --suite metaworld --out DIR      # MetaWorld tasks (bench/bac_metaworld.py, its own options)

Outputs (calibration, plots, results.json) go to ``--out``, or to a fresh temporary directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from policylens.accel import (
    BACConfig,
    action_error,
    apply_cache,
    cache_info,
    calibrate,
    random_observations,
    remove_cache,
    reset_state,
    save_plots,
)
from policylens.models.diffusion import TinyDiffusionPolicy, make_windows
from policylens.models.diffusion._reach import ASSET_DIR


def sim_observations(policy: TinyDiffusionPolicy, n: int, seed: int) -> torch.Tensor:
    """Observation windows (n, To, O) from expert reach episodes (layout seeds disjoint from training)."""
    from policylens.sim.pybullet import make_training_episodes

    obs, n_eps = np.zeros((0,)), max(4, n // 3)
    while len(obs) < n:
        eps = make_training_episodes("reach", n_eps, seed=seed, progress=False)
        obs, _ = make_windows(eps, policy.config)
        n_eps *= 2
    idx = np.random.default_rng(seed).permutation(len(obs))[:n]
    return torch.from_numpy(obs[idx])


def denoiser_fn(policy: TinyDiffusionPolicy, obs: torch.Tensor, steps: list[int]):
    cond = policy.obs_normalizer.normalize(obs)  # (B, To, O)
    x = torch.randn(
        obs.shape[0], policy.config.horizon, policy.config.action_dim, generator=torch.Generator().manual_seed(0)
    )
    ts = [torch.full((1,), t, dtype=torch.long) for t in steps]

    @torch.no_grad()
    def run():
        reset_state(policy)
        for t in ts:
            policy.model(x, t, cond)

    return run


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Mode:
    def __init__(self, name, config=None, compiled=False, **predict_kwargs):
        self.name, self.config, self.compiled, self.kw = name, config, compiled, predict_kwargs
        self.times: dict[str, list[float]] = {}
        self.note = ""

    def __enter__(self):
        if self.config is not None:
            apply_cache(POLICY, self.config)
        if self.compiled:
            POLICY.model = COMPILED
        return self

    def __exit__(self, *exc):
        if self.config is not None:
            remove_cache(POLICY)
        if self.compiled:
            POLICY.model = EAGER


def main() -> None:
    global POLICY, EAGER, COMPILED
    if "--suite" in sys.argv[1:]:
        i = sys.argv.index("--suite")
        suite = sys.argv[i + 1] if i + 1 < len(sys.argv) else ""
        if suite == "metaworld":
            from bac_metaworld import main as metaworld_main  # bench/ is the script's folder, on sys.path

            return metaworld_main(sys.argv[1:i] + sys.argv[i + 2 :])
        if suite != "pybullet":
            raise SystemExit(f"--suite {suite!r}: expected pybullet (the default) or metaworld")
        del sys.argv[i : i + 2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default=str(ASSET_DIR))
    ap.add_argument("--num-updates", type=int, default=10)
    ap.add_argument("--n-bu", type=int, default=3)
    ap.add_argument("--metric", default="cosine", help="calibration metric: cosine | l1 | l2 | mse")
    ap.add_argument("--calib-obs", type=int, default=48)
    ap.add_argument("--calib-seeds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=28)
    ap.add_argument("--calls", type=int, default=20, help="timed calls per mode at B=1 (full: 100)")
    ap.add_argument("--calls-batched", type=int, default=4, help="timed calls per mode at B=--batch (full: 100)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    ap.add_argument("--episodes", type=int, default=20, help="closed-loop episodes per mode (full: 50)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a busy 2-core box)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (a check, not a figure)")
    args = ap.parse_args()
    if args.smoke:
        args.calib_obs, args.calib_seeds, args.batch, args.calls, args.calls_batched = 2, 1, 2, 1, 1
        args.rounds, args.episodes, args.no_compile = 1, 1, True
    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-bac-"))
    out.mkdir(parents=True, exist_ok=True)
    POLICY = TinyDiffusionPolicy.from_pretrained(args.policy)
    EAGER = POLICY.model
    K, S = POLICY.num_inference_steps, args.num_updates
    try:
        obs_all = sim_observations(POLICY, args.calib_obs + args.batch, seed=7)
        obs_note = "expert reach observations"
    except ImportError as e:
        obs_all, obs_note = random_observations(POLICY, args.calib_obs + args.batch, 7), f"random obs ({e})"
    calib_obs, eval_obs = obs_all[: args.calib_obs], obs_all[args.calib_obs :]
    t0 = time.perf_counter()
    cal = calibrate(
        POLICY, calib_obs, num_updates=S, n_bu=args.n_bu, metric=args.metric, batch_size=8, num_seeds=args.calib_seeds
    )
    calib_s = time.perf_counter() - t0
    cal.save(out / "calibration.json")
    save_plots(cal, out)

    modes = [
        Mode("original"),
        Mode(f"uniform S={S}", BACConfig(mode="uniform", num_updates=S)),
        Mode(f"optimal S={S}", BACConfig(mode="optimal", calibration=cal, n_bu=0)),
        Mode(f"optimal S={S} + BU({args.n_bu})", BACConfig(mode="optimal", calibration=cal, n_bu=args.n_bu)),
    ]
    with modes[3] as m:
        bu_frac = 1 - cache_info(POLICY)["skipped_fraction"]
    s_eq = round(bu_frac * K)
    if s_eq != S:
        modes.append(Mode(f"uniform S={s_eq} (= BU compute)", BACConfig(mode="uniform", num_updates=s_eq)))
    modes.append(Mode(f"DDIM {S} steps", sampler="ddim", num_inference_steps=S))
    if not args.no_compile:
        try:
            COMPILED = torch.compile(EAGER)
            POLICY.model = COMPILED
            POLICY.predict_action(eval_obs[:1])
            POLICY.predict_action(eval_obs)
            modes.append(Mode("original + torch.compile", compiled=True))
        except Exception as e:
            print(f"torch.compile row skipped: {type(e).__name__}: {str(e)[:200]}")
        finally:
            POLICY.model = EAGER

    ddpm_steps = POLICY.ddpm.set_timesteps(K)
    ref = POLICY.predict_action(eval_obs, generator=torch.Generator().manual_seed(0))
    for m in modes:
        with m:
            acts = POLICY.predict_action(eval_obs, generator=torch.Generator().manual_seed(0), **m.kw)
            m.err = action_error(ref, acts)
            m.skipped = cache_info(POLICY).get("skipped_fraction") or 0.0
            if m.kw.get("sampler") == "ddim":
                m.skipped = 1 - S / K
    for r in range(args.rounds):
        for m in modes:
            with m:
                steps = POLICY.ddim.set_timesteps(S) if m.kw.get("sampler") == "ddim" else ddpm_steps
                for b, calls in ((1, args.calls), (args.batch, args.calls_batched)):
                    o = eval_obs[:b]
                    n = max(1, calls // args.rounds)
                    g = torch.Generator()
                    e2e = lambda o=o, g=g, kw=m.kw: POLICY.predict_action(o, generator=g.manual_seed(0), **kw)  # noqa: E731
                    den = denoiser_fn(POLICY, o, steps)
                    if r == 0:
                        e2e(), den()  # warm-up
                    m.times.setdefault(f"e2e{b}", []).extend(timed(e2e, n))
                    m.times.setdefault(f"den{b}", []).extend(timed(den, n))
        print(f"timing round {r + 1}/{args.rounds} done")

    sim_ok = True
    try:
        from policylens.sim import diffusion_agent
        from policylens.sim.pybullet import evaluate_policy
    except ImportError as e:
        sim_ok, why = False, str(e)
    for m in modes:
        m.success = None
        if sim_ok and args.episodes > 0:
            with m:
                agent = diffusion_agent(POLICY, seed=0, noise="episode", **m.kw)
                res = evaluate_policy(
                    agent,
                    "reach",
                    episodes=args.episodes,
                    render=False,
                    progress=False,
                )
                m.success = (res.success_rate, *res.interval)

    base = {k: float(np.median(v)) for k, v in modes[0].times.items()}
    B = args.batch
    header = (
        f"{'mode':34s} {'B=1 e2e ms med/p90':>20s} {'B=1 den ms':>10s} {f'B={B} e2e ms med/p90':>21s} "
        f"{f'B={B} den ms':>10s} {'x B=1':>6s} {f'x B={B}':>6s} {'skip':>5s} {'act MSE':>9s} {'max abs':>8s} "
        f"{'success [95% CI]':>20s}"
    )
    print(
        f"\nBAC benchmark: {POLICY.config.n_layer} layers, n_emb {POLICY.config.n_emb}, K={K} DDPM steps, "
        f"{torch.get_num_threads()} threads; calibration {cal.num_samples} samples in {calib_s:.0f}s ({obs_note}); "
        f"stability {cal.stability.get('mean_jaccard_vs_full')}"
    )
    print(header)
    rows = []
    for m in modes:
        med = {k: float(np.median(v)) * 1e3 for k, v in m.times.items()}
        p90 = {k: float(np.percentile(v, 90)) * 1e3 for k, v in m.times.items()}
        succ = "skipped" if m.success is None else f"{m.success[0]:.0%} [{m.success[1]:.0%},{m.success[2]:.0%}]"
        print(
            f"{m.name:34s} {med['e2e1']:9.1f}/{p90['e2e1']:<9.1f} {med['den1']:10.1f} "
            f"{med[f'e2e{B}']:10.1f}/{p90[f'e2e{B}']:<10.1f} {med[f'den{B}']:10.1f} "
            f"{base['e2e1'] * 1e3 / med['e2e1']:6.2f} {base[f'e2e{B}'] * 1e3 / med[f'e2e{B}']:6.2f} "
            f"{m.skipped:5.0%} {m.err['mse']:9.2e} {m.err['max_abs']:8.4f} {succ:>20s}"
        )
        rows.append(
            {
                "mode": m.name,
                "median_ms": med,
                "p90_ms": p90,
                "skipped": m.skipped,
                **m.err,
                "success": m.success,
                "n_calls": {k: len(v) for k, v in m.times.items()},
            }
        )
    if not sim_ok:
        print(f"closed-loop success skipped: policylens.sim.pybullet unavailable ({why})")
    (out / "results.json").write_text(json.dumps({"rows": rows, "stability": cal.stability}, indent=1))
    print(f"\nwrote {out}/results.json, calibration.json, similarity.png, schedule.png, bu_scores.png")


if __name__ == "__main__":
    main()
