"""``policylens accel``: calibrate a BAC schedule and evaluate caching modes on a diffusion policy or
a flow-matching VLA (``TinyVLA``, a LeRobot SmolVLA / pi0 / pi0.5 checkpoint directory, a transformers
PI0 / PI05 directory with its processor: the action expert is cached, the prefix runs once per chunk).
A VLA runs on random frames of its cameras at its image size, sample instructions and random states,
made into its inputs by its own ``make_batch`` (``example_batch``; a LeRobot policy: its pre-processor).

Both commands default to one torch thread: the denoiser is small, so more threads buy little on a
quiet machine (2.7 s against 4.2 s per calibration batch on 2 cores) and cost several-fold when
other work shares the cores (28.7 s against 5.2 s per batch; an uncached action chunk 3-12 s against
0.35-0.7 s), which once made a cached mode look no faster than the uncached one.

``accel calibrate`` runs under ``torchrun`` too: every rank loads the same policy and observations,
calibrates its share of the batches on the CPU (gloo), the similarity sums are added over the ranks,
and rank 0 alone prints and writes the calibration and its plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from ._app import new_app
from ._common import ACCEL_METRICS, ACCEL_MODES, choice_enum
from ._errors import CommandError
from ._threads import apply_threads, threads_option

app = new_app("Diffusion inference caching (BAC): calibrate and evaluate.")
console = Console()


Mode = choice_enum("Mode", ACCEL_MODES)  # caching modes; --mode is repeatable
Metric = Literal[ACCEL_METRICS]  # similarity metrics


DIFFUSION_POLICY_HELP = (
    "TinyDiffusionPolicy or TinyVLA directory, the built-in name tiny_diffusion_policy / tiny_vla, a LeRobot "
    "SmolVLA / pi0 / pi0.5 checkpoint directory or a transformers PI0 / PI05 directory with its processor "
    "(a VLA's action expert is cached; its prefix runs once per chunk)."
)
OBS_HELP = (
    "safetensors with 'obs' (N, n_obs_steps, obs_dim), diffusion policies only; default: random observations "
    "in the policy's range (a VLA: random frames of its cameras, sample instructions and states through its "
    "make_batch)."
)
THREADS_WHY = (
    "the denoiser is small: more threads gain little alone and slow it several-fold when other work shares the cores"
)
CAL_THREADS_HELP = f"CPU threads for torch; default 1 (or POLICYLENS_THREADS) because {THREADS_WHY}."
EVAL_THREADS_HELP = (
    f"CPU threads for torch; default 1 (or POLICYLENS_THREADS) because {THREADS_WHY}, "
    "which skews every timing (one thread gives the steadiest medians)."
)
UPDATES_DEFAULT = "Default: 10; a VLA's action expert: half its flow steps (5 of 10)."
QUICK_OBS, QUICK_SEEDS = 16, 1  # the default (quick) calibration; docs/bac.md gives the thorough one


def _load(policy_spec: str, obs_path: Path | None, *, num_obs: int, seed: int):
    from policylens.accel import load_observations, random_observations
    from policylens.models import TinyDiffusionPolicy

    policy = _policy(policy_spec)
    if callable(getattr(policy, "example_batch", None)) and callable(getattr(policy, "make_batch", None)):
        if obs_path:
            raise CommandError(
                f"--obs {obs_path}: observation files are for diffusion policies; a {type(policy).__name__} runs on "
                "random images here (leave out --obs), or call accel.calibrate / compare_modes with make_batch(...) "
                "batches"
            )
        return policy.eval(), policy.example_batch(num_obs, seed=seed), _vla_source(policy)
    if not isinstance(policy, TinyDiffusionPolicy):
        raise CommandError(
            f"--policy {policy_spec!r} is a {type(policy).__name__}, not a TinyDiffusionPolicy, TinyVLA, LeRobot "
            "SmolVLA / pi0 / pi0.5 or transformers PI0 / PI05 policy with its processor"
        )
    if obs_path:
        return policy, load_observations(obs_path, policy=policy), f"{obs_path}"
    return policy, random_observations(policy, num_obs, seed), "random in the policy's range"


def _policy(spec: str):
    """A policylens checkpoint (or built-in name); a LeRobot checkpoint or another Hugging Face directory
    (a transformers PI0 / PI05 with its processor) through load_model."""
    from policylens.models import is_lerobot_checkpoint, load_model, load_policy

    path = Path(spec)
    if not (is_lerobot_checkpoint(path) or _foreign_config(path / "config.json")):
        return load_policy(spec)
    try:
        policy = load_model(path)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise CommandError(f"--policy {spec}: {exc}") from None
    if not callable(getattr(policy, "example_batch", None)):
        raise CommandError(
            f"--policy {spec}: a {type(policy).__name__}; accel runs a LeRobot SmolVLA / pi0 / pi0.5 checkpoint or a "
            "transformers PI0 / PI05 directory with its processor (save the processor beside a bare model: "
            "processor.save_pretrained(DIR)), a TinyVLA or a TinyDiffusionPolicy"
        )
    return policy


def _foreign_config(config: Path) -> bool:
    """Whether ``config`` is a readable JSON object without policylens' ``type``: another library's checkpoint."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False  # none, or unreadable: load_policy names the file
    return isinstance(data, dict) and "type" not in data


def _vla_source(policy) -> str:
    """What the random VLA observations are, for the first line."""
    cfg = policy.config
    return f"random images of {', '.join(cfg.cameras)}, sample instructions, {cfg.state_dim or 0}-D states"


def _default_updates(policy) -> int:
    from policylens.accel import default_steps, policy_profile

    steps = default_steps(policy)
    if not policy_profile(policy).root or steps is None:
        return 10  # a diffusion policy's 100 DDPM steps (a calibration caps it at its step count)
    return max(1, steps // 2)


def _steps_line(policy) -> str:
    from policylens.accel import default_steps, policy_profile

    profile = policy_profile(policy)
    where = f" (expert: {profile.root}; its prefix runs once per chunk)" if profile.root else ""
    return f"{default_steps(policy, profile)} denoising steps{where}"


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


def _stability_line(stability: dict) -> str:
    jac = stability.get("mean_jaccard_vs_full")
    if not jac:
        return f"stability not measured ({stability.get('note', 'too few calibration batches')})"
    same = stability.get("fraction_identical_vs_full", [])
    return (
        f"stability: schedules from {len(jac)} disjoint subsets of the runs overlap the full one by a mean "
        f"Jaccard of {', '.join(f'{j:.2f}' for j in jac)} ({', '.join(f'{f:.0%}' for f in same)} of branches "
        "identical); more --num-obs / --seeds raise it"
    )


@app.command()
def calibrate(
    policy: Annotated[str, typer.Option(help=DIFFUSION_POLICY_HELP)],
    out: Annotated[Path, typer.Option(help="Calibration JSON to write.")],
    obs: Annotated[Path | None, typer.Option(help=OBS_HELP)] = None,
    num_obs: Annotated[
        int, typer.Option(min=1, help="Random observations when --obs is not given (thorough: 128).")
    ] = QUICK_OBS,
    num_updates: Annotated[
        int | None, typer.Option(min=1, help=f"Update steps S per branch. {UPDATES_DEFAULT}")
    ] = None,
    metric: Annotated[Metric, typer.Option(help="Similarity of branch outputs between steps.")] = "cosine",
    n_bu: Annotated[int, typer.Option(min=0, help="Branches that get the Bubbling Union.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Observations per calibration forward.")] = 8,
    seeds: Annotated[int, typer.Option(min=1, help="Noise seeds per observation batch (thorough: 2).")] = QUICK_SEEDS,
    seed: Annotated[int, typer.Option(help="Seed of the random observations and of the noise.")] = 0,
    plots: Annotated[Path | None, typer.Option(help="Directory for similarity / schedule / BU-score PNGs.")] = None,
    threads: int | None = threads_option(CAL_THREADS_HELP),
) -> None:
    """Record branch outputs at every denoising step, average the similarities, write the schedule.

    The defaults are a quick calibration (16 observations x 1 noise seed, seconds); thorough: --num-obs 128 --seeds 2.
    """
    from policylens.accel import calibrate as run_calibration
    from policylens.accel import num_rows, save_plots
    from policylens.runs import distributed, env_world

    if out.is_dir():
        raise CommandError(f"--out {out} is a directory; pass the path of the calibration JSON to write")
    if plots is not None and plots.is_file():
        raise CommandError(f"--plots {plots} is a file; pass a folder for the PNGs")
    started = time.perf_counter()
    try:
        with distributed(device="cpu") as d:  # under torchrun: the batches split over the ranks, on CPUs
            say = console.print if d.main else _quiet
            n_threads = apply_threads(threads, default=1)
            pol, observations, source = _load(policy, obs, num_obs=num_obs, seed=seed)
            num_updates = num_updates or _default_updates(pol)
            n_obs = num_rows(observations)
            ranks = f", split over {d.world} ranks" if d.active else ""
            say(
                f"calibrating {policy}: {n_obs} observations ({source}) x {seeds} noise seeds = "
                f"{n_obs * seeds} samples in batches of {batch_size}{ranks}, {_steps_line(pol)}, "
                f"S={num_updates}, metric {metric}, n_bu {n_bu}; torch threads: {n_threads}"
            )
            cal = run_calibration(
                pol,
                observations,
                num_updates=num_updates,
                metric=metric,
                n_bu=n_bu,
                batch_size=batch_size,
                num_seeds=seeds,
                seed=seed,
                progress=d.main,
            )
            if d.main:  # every rank holds the whole calibration; rank 0 writes it
                cal.save(out)
                say(
                    f"wrote {out} in {time.perf_counter() - started:.1f} s: K={cal.num_steps}, "
                    f"{len(cal.block_names)} branches; {_stability_line(cal.stability)}"
                )
                for p in save_plots(cal, plots) if plots else []:
                    say(f"wrote {p}")
    except KeyboardInterrupt:
        if env_world()[0] == 0:
            typer.echo(
                f"\ninterrupted after {time.perf_counter() - started:.0f} s: nothing kept (a calibration is written "
                f"whole, at the end) and {out} left as it was; rerun the same command "
                "(fewer --num-obs / --seeds for a quicker one)",
                err=True,
            )
        raise typer.Exit(130) from None


def _quiet(*_args, **_kwargs) -> None:
    """What ranks other than 0 print."""


def eval_modes(modes: list[Mode] | None, calibration: Path | None) -> list[Mode]:
    """The modes to run, ``original`` first (the baseline of every speed-up) even when not asked for.

    Default: every mode, ``optimal`` only when a calibration is given.
    """
    if not modes:
        modes = [m for m in Mode if m is not Mode.optimal or calibration is not None]
    if Mode.optimal in modes and calibration is None:
        raise CommandError("--mode optimal needs --calibration CAL.json; write one with `policylens accel calibrate`")
    return [Mode.original, *dict.fromkeys(m for m in modes if m is not Mode.original)]


def _bac_config(mode: Mode, *, num_updates: int, calibration):
    """The BACConfig of one --mode (None: original, the uncached policy)."""
    from policylens.accel import BACConfig

    if mode is Mode.original:
        return None
    if mode is Mode.uniform:
        return BACConfig(mode="uniform", num_updates=num_updates)
    return BACConfig(mode="optimal", calibration=calibration)


@app.command("eval")
def evaluate(
    policy: Annotated[str, typer.Option(help=DIFFUSION_POLICY_HELP)],
    calibration: Annotated[Path | None, typer.Option(help="Calibration JSON (needed by --mode optimal).")] = None,
    mode: Annotated[
        list[Mode] | None,
        typer.Option(
            help="Mode to compare (repeatable); default all, optimal only with --calibration. "
            "original always runs: speed-ups are against it."
        ),
    ] = None,
    num_updates: Annotated[
        int | None, typer.Option(min=1, help=f"Uniform: updates per branch. {UPDATES_DEFAULT}")
    ] = None,
    obs: Annotated[Path | None, typer.Option(help=OBS_HELP)] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size per action chunk.")] = 1,
    calls: Annotated[int, typer.Option(min=1, help="Timed calls per mode (after 2 untimed warm-up calls).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the random observations and of the noise.")] = 0,
    threads: int | None = threads_option(EVAL_THREADS_HELP),
) -> None:
    """Time each mode per action chunk and measure its action error against the uncached policy.

    A VLA's rows split each chunk into its prefix and its action expert (ms per flow step, expert
    speed-up); policies whose agents run part of a chunk get the action error on that part too.
    """
    from policylens.accel import compare_modes, num_rows, take_rows

    modes = eval_modes(mode, calibration)
    cal = _load_calibration(calibration) if calibration is not None and Mode.optimal in modes else None
    n_threads = apply_threads(threads, default=1)
    pol, observations, source = _load(policy, obs, num_obs=batch, seed=seed)
    if num_rows(observations) < batch:
        raise CommandError(f"--obs {obs} holds {num_rows(observations)} observations; --batch {batch} needs that many")
    observations = take_rows(observations, 0, batch)
    num_updates = num_updates or _default_updates(pol)
    console.print(
        f"timing {policy}: batch {batch} ({source}), {calls} timed calls per mode after 2 warm-up, "
        f"{_steps_line(pol)}, seed {seed}; torch threads: {n_threads}"
    )
    configs = {m.value: _bac_config(m, num_updates=num_updates, calibration=cal) for m in modes}
    rows = compare_modes(pol, configs, observations, calls=calls, seed=seed)
    labels = [m.value if (mode is None or m in mode) else f"{m.value} (baseline)" for m in modes]
    for table in _tables(rows, labels, _executed_label(pol)):
        console.print(table)


def _tables(rows: list[dict], labels: list[str], executed: str) -> list[Table]:
    """Speed (with prefix / expert columns for a VLA) and action error (with the executed part where the
    policy's agent runs part of each chunk), one table each so both stay readable in 80 columns."""
    split, part = "expert_ms" in rows[0], "mse_executed" in rows[0]
    speed = Table("mode", "median ms", "p90 ms", "speed-up", "skipped", title="time per action chunk")
    error = Table("mode", "action MSE", "max abs", title="action error against the uncached policy")
    if split:
        for column in ("prefix ms", "expert ms/step", "expert speed-up"):
            speed.add_column(column)
    if part:
        error.add_column(f"executed MSE ({executed})")
        error.add_column("executed max abs")
    for label, r in zip(labels, rows, strict=True):
        cells = [label, f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['speedup']:.2f}x", f"{r['skipped']:.0%}"]
        if split:
            cells += [f"{r['prefix_ms']:.1f}", f"{r['expert_step_ms']:.2f}", f"{r['expert_speedup']:.2f}x"]
        speed.add_row(*cells)
        cells = [label, f"{r['mse']:.2e}", f"{r['max_abs']:.3f}"]
        if part:
            cells += [f"{r['mse_executed']:.2e}", f"{r['max_abs_executed']:.3f}"]
        error.add_row(*cells)
    return [speed, error]


def _executed_label(policy) -> str:
    from policylens.accel import policy_profile

    executed = policy_profile(policy).executed
    if executed is None:
        return ""
    part = executed(policy)
    return f"actions {part.start}..{part.stop - 1}"
