"""``policylens accel``: calibrate a BAC schedule and evaluate caching modes on a diffusion policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Diffusion inference caching (BAC): calibrate and evaluate.", no_args_is_help=True)
console = Console()


def _load(policy_spec: str, obs_path: Path | None, num_obs: int, seed: int):
    from policylens.accel import load_observations, random_observations
    from policylens.models import TinyDiffusionPolicy, load_policy

    policy = load_policy(policy_spec)
    if not isinstance(policy, TinyDiffusionPolicy):
        raise typer.BadParameter(f"{policy_spec!r} is a {type(policy).__name__}, not a TinyDiffusionPolicy")
    obs = load_observations(obs_path) if obs_path else random_observations(policy, num_obs, seed)
    return policy, obs


@app.command()
def calibrate(
    policy: Annotated[
        str, typer.Option(help="TinyDiffusionPolicy directory or the built-in name tiny_diffusion_policy.")
    ],
    out: Annotated[Path, typer.Option(help="Calibration JSON to write.")],
    obs: Annotated[
        Path | None, typer.Option(help="safetensors with 'obs' (N, n_obs_steps, obs_dim); default: random.")
    ] = None,
    num_obs: Annotated[int, typer.Option(help="Random observations when --obs is not given.")] = 32,
    num_updates: Annotated[int, typer.Option(help="Update steps S per branch.")] = 10,
    metric: Annotated[str, typer.Option(help="cosine | l1 | l2 | mse.")] = "cosine",
    n_bu: Annotated[int, typer.Option(help="Branches that get the Bubbling Union.")] = 0,
    batch_size: Annotated[int, typer.Option()] = 8,
    seeds: Annotated[int, typer.Option(help="Noise seeds per observation batch.")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    plots: Annotated[Path | None, typer.Option(help="Directory for similarity / schedule / BU-score PNGs.")] = None,
) -> None:
    """Record branch outputs at every denoising step, average the similarities, write the schedule."""
    from policylens.accel import calibrate as run_calibration
    from policylens.accel import save_plots

    pol, observations = _load(policy, obs, num_obs, seed)
    cal = run_calibration(
        pol,
        observations,
        num_updates=num_updates,
        metric=metric,
        n_bu=n_bu,
        batch_size=batch_size,
        num_seeds=seeds,
        seed=seed,
    )
    cal.save(out)
    console.print(f"wrote {out}: K={cal.num_steps}, {len(cal.block_names)} branches, stability {cal.stability}")
    if plots:
        for p in save_plots(cal, plots):
            console.print(f"wrote {p}")


@app.command("eval")
def evaluate(
    policy: Annotated[str, typer.Option(help="TinyDiffusionPolicy directory or tiny_diffusion_policy.")],
    calibration: Annotated[Path | None, typer.Option(help="Calibration JSON (for --mode optimal).")] = None,
    mode: Annotated[list[str] | None, typer.Option(help="Modes to compare (repeatable); default all three.")] = None,
    num_updates: Annotated[int, typer.Option(help="Uniform: updates per branch.")] = 10,
    obs: Annotated[Path | None, typer.Option()] = None,
    batch: Annotated[int, typer.Option(help="Batch size per action chunk.")] = 1,
    calls: Annotated[int, typer.Option(help="Timed calls per mode.")] = 10,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Time each mode per action chunk and measure its action error against the uncached policy."""
    from policylens.accel import BACConfig, evaluate_mode

    pol, observations = _load(policy, obs, batch, seed)
    mode = mode or ["original", "uniform", "optimal"]
    observations = observations[:batch]
    table = Table("mode", "median ms", "p90 ms", "speed-up", "skipped", "action MSE", "max abs")
    base = None
    for m in mode:
        if m == "original":
            cfg = None
        elif m == "uniform":
            cfg = BACConfig(mode="uniform", num_updates=num_updates)
        else:
            if calibration is None:
                raise typer.BadParameter("--mode optimal needs --calibration", param_hint="--calibration")
            cfg = BACConfig(mode=m, calibration=calibration)
        r = evaluate_mode(pol, cfg, observations, calls=calls, seed=seed)
        base = base or r["median_ms"]
        table.add_row(
            m,
            f"{r['median_ms']:.1f}",
            f"{r['p90_ms']:.1f}",
            f"{base / r['median_ms']:.2f}x",
            f"{r['skipped']:.0%}",
            f"{r['mse']:.2e}",
            f"{r['max_abs']:.3f}",
        )
    console.print(table)
