"""``policylens accel``: calibrate a BAC schedule and evaluate caching modes on a diffusion policy."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ._app import new_app
from ._errors import CommandError

app = new_app("Diffusion inference caching (BAC): calibrate and evaluate.")
console = Console()


class Mode(StrEnum):
    """Caching modes (``policylens.accel.MODES``; kept here so --help needs no torch import)."""

    original = "original"
    uniform = "uniform"
    optimal = "optimal"


class Metric(StrEnum):
    """Similarity metrics (``policylens.accel.METRICS``)."""

    cosine = "cosine"
    l1 = "l1"
    l2 = "l2"
    mse = "mse"


POLICY_HELP = "TinyDiffusionPolicy directory or the built-in name tiny_diffusion_policy."
OBS_HELP = "safetensors with 'obs' (N, n_obs_steps, obs_dim); default: random observations in the policy's range."


def _load(policy_spec: str, obs_path: Path | None, num_obs: int, seed: int):
    from policylens.accel import load_observations, random_observations
    from policylens.models import TinyDiffusionPolicy, load_policy

    policy = load_policy(policy_spec)
    if not isinstance(policy, TinyDiffusionPolicy):
        raise CommandError(f"--policy {policy_spec!r} is a {type(policy).__name__}, not a TinyDiffusionPolicy")
    obs = load_observations(obs_path) if obs_path else random_observations(policy, num_obs, seed)
    return policy, obs


def _load_calibration(path: Path):
    """The calibration, or a one-line error naming the file, the field and the fix."""
    from policylens.accel import Calibration

    fix = f"write it again with `policylens accel calibrate --out {path}`"
    try:
        return Calibration.load(path)  # a file that is not JSON raises naming it
    except KeyError as exc:
        raise CommandError(f"--calibration {path}: field {exc.args[0]!r} is missing; {fix}") from exc
    except (AttributeError, TypeError) as exc:
        raise CommandError(f"--calibration {path}: not a calibration ({exc}); {fix}") from exc


@app.command()
def calibrate(
    policy: Annotated[str, typer.Option(help=POLICY_HELP)],
    out: Annotated[Path, typer.Option(help="Calibration JSON to write.")],
    obs: Annotated[Path | None, typer.Option(help=OBS_HELP)] = None,
    num_obs: Annotated[int, typer.Option(min=1, help="Random observations when --obs is not given.")] = 32,
    num_updates: Annotated[int, typer.Option(min=1, help="Update steps S per branch.")] = 10,
    metric: Annotated[Metric, typer.Option(help="Similarity of branch outputs between steps.")] = Metric.cosine,
    n_bu: Annotated[int, typer.Option(min=0, help="Branches that get the Bubbling Union.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Observations per calibration forward.")] = 8,
    seeds: Annotated[int, typer.Option(min=1, help="Noise seeds per observation batch.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random observations and of the noise.")] = 0,
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
        metric=metric.value,
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


def eval_modes(modes: list[Mode] | None, calibration: Path | None) -> list[Mode]:
    """The modes to run, ``original`` first (the baseline of every speed-up) even when not asked for.

    Default: every mode, ``optimal`` only when a calibration is given.
    """
    if not modes:
        modes = [m for m in Mode if m is not Mode.optimal or calibration is not None]
    if Mode.optimal in modes and calibration is None:
        raise CommandError("--mode optimal needs --calibration CAL.json; write one with `policylens accel calibrate`")
    return [Mode.original, *dict.fromkeys(m for m in modes if m is not Mode.original)]


@app.command("eval")
def evaluate(
    policy: Annotated[str, typer.Option(help=POLICY_HELP)],
    calibration: Annotated[Path | None, typer.Option(help="Calibration JSON (needed by --mode optimal).")] = None,
    mode: Annotated[
        list[Mode] | None,
        typer.Option(
            help="Mode to compare (repeatable); default all, optimal only with --calibration. "
            "original always runs: speed-ups are against it."
        ),
    ] = None,
    num_updates: Annotated[int, typer.Option(min=1, help="Uniform: updates per branch.")] = 10,
    obs: Annotated[Path | None, typer.Option(help=OBS_HELP)] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size per action chunk.")] = 1,
    calls: Annotated[int, typer.Option(min=1, help="Timed calls per mode.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the random observations and of the noise.")] = 0,
) -> None:
    """Time each mode per action chunk and measure its action error against the uncached policy."""
    from policylens.accel import BACConfig, evaluate_mode

    modes = eval_modes(mode, calibration)
    cal = _load_calibration(calibration) if calibration is not None and Mode.optimal in modes else None
    pol, observations = _load(policy, obs, batch, seed)
    observations = observations[:batch]
    table = Table("mode", "median ms", "p90 ms", "speed-up", "skipped", "action MSE", "max abs")
    base = None
    for m in modes:
        if m is Mode.original:
            cfg = None
        elif m is Mode.uniform:
            cfg = BACConfig(mode="uniform", num_updates=num_updates)
        else:
            cfg = BACConfig(mode="optimal", calibration=cal)
        r = evaluate_mode(pol, cfg, observations, calls=calls, seed=seed)
        base = base or r["median_ms"]
        label = m.value if (mode is None or m in mode) else f"{m.value} (baseline)"
        table.add_row(
            label,
            f"{r['median_ms']:.1f}",
            f"{r['p90_ms']:.1f}",
            f"{base / r['median_ms']:.2f}x",
            f"{r['skipped']:.0%}",
            f"{r['mse']:.2e}",
            f"{r['max_abs']:.3f}",
        )
    console.print(table)
