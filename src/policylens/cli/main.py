"""The ``policylens`` entry point.

Errors the user can fix (a bad tap name, a missing checkpoint, a damaged store or calibration
file) print one line and exit 2; ``--debug`` or ``POLICYLENS_DEBUG=1`` shows their traceback
(see ``_errors`` and ``_app``).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from policylens.cli import _accel, _align, _attention, _cache, _retain, _sim, _train
from policylens.cli._app import new_app
from policylens.cli._common import POLICY_HELP
from policylens.cli._errors import DEBUG_ENV, CommandError
from policylens.cli._threads import apply_threads, threads_option

app = new_app("policylens: look inside VLA and diffusion robot policies.")
app.add_typer(_accel.app, name="accel")
app.add_typer(_align.app, name="align")
app.add_typer(_attention.app, name="attention")
app.add_typer(_cache.app, name="cache")
app.add_typer(_retain.app, name="retain")
app.add_typer(_sim.app, name="sim")
app.add_typer(_train.app, name="train")


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help=f"Show the full traceback of every error (also {DEBUG_ENV}=1)."),
) -> None:
    """policylens: look inside VLA and diffusion robot policies."""


@app.command()
def demo(
    policy: str = typer.Option("tiny_vla", help=POLICY_HELP),
    batch_size: int = typer.Option(2, min=1, help="Sample observations to tap."),
    seed: int = typer.Option(0, help="Seed for inputs and noise."),
    out: str | None = typer.Option(None, help="Folder for the demo's outputs (default: a new temporary folder)."),
    jobs: bool = typer.Option(True, help="Also build an anchor cache and time BAC (--no-jobs: taps only)."),
    threads: int | None = threads_option(
        "CPU threads for torch \\[default: 1: the demo's small models run fastest on one thread, "
        "and several slow down badly when other work shares the cores; also POLICYLENS_THREADS]."
    ),
) -> None:
    """Tap the reference VLA on simulated inputs, build an anchor cache, time a BAC speed-up."""
    from policylens._demo import run_demo

    run_demo(
        policy=policy, batch_size=batch_size, seed=seed, out=out, jobs=jobs, threads=apply_threads(threads, default=1)
    )


@app.command()
def taps(
    model: str = typer.Argument(..., help="Built-in policy name, policylens or HF checkpoint directory."),
    probe: bool = typer.Option(
        False, help="Run the model's entry points (inference, training) once and show which taps fire on each."
    ),
    threads: int | None = threads_option(),
) -> None:
    """List every tap point of MODEL: name, module path, shape (and, with --probe, where it fires)."""
    from policylens.models import load_model
    from policylens.tap import example_entry_points, list_taps, probe_taps

    typer.echo(f"torch threads: {apply_threads(threads)}")
    loaded = load_model(model)
    fired = {}
    if probe:
        points = example_entry_points(loaded)
        if not points:
            raise CommandError(f"--probe: {type(loaded).__name__} has no example_batch() to make inputs from")
        fired = probe_taps(loaded, points)
    table = Table(title=f"tap points of {model}")
    for col in ("name", "module path", "shape", *(("fires on (calls)",) if probe else ())):
        table.add_column(col)
    for info in list_taps(loaded):
        where = ", ".join(f"{k} ({v})" for k, v in fired.get(info.name, {}).items()) or "never"
        table.add_row(info.name, info.module_path, info.shape, *((where,) if probe else ()))
    Console(width=200).print(table)


@app.command()
def version() -> None:
    """Print the policylens version."""
    from policylens import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
