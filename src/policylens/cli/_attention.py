"""``policylens attention``: attention maps, overlays and videos of a policy over episodes.

``attention run`` also runs under ``torchrun --no-python ... policylens attention run``: each rank
takes a block of the episodes, rank 0 writes the run's summaries (``--workers`` is refused there).

The choices are the attention job's own tuples (``RUN_MODES``, ``PHASES``, ``STEP_MODES``),
mirrored in ``_common`` so that ``policylens`` starts without importing the job; the job checks
every value again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import typer

from ._app import new_app
from ._common import EPISODES_HELP, OVERWRITE_HELP, PHASES, POLICY_HELP, RUN_MODES, STEP_MODES, interrupted
from ._errors import CommandError
from ._threads import apply_threads, threads_option

app = new_app("Attention analysis: maps, overlays and videos over DROID / LeRobot episodes.")

PHASE_QUERIES = {"prefix": "text -> image", "suffix": "action -> image"}  # which tokens look at which, per phase
Mode = Literal[RUN_MODES]  # map normalisations of a run


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CommandError(f"{option}={text!r}: expected comma-separated integers, e.g. 1,2,3") from None
    if not values:
        raise CommandError(f"{option}={text!r}: expected at least one integer, e.g. 1,2,3")
    return values


def _phases(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names or any(p not in PHASES for p in names):
        raise CommandError(f"--phases={text!r}: expected comma-separated phases from {', '.join(PHASES)}")
    return names


def _step(text: str) -> str | int:
    if text in STEP_MODES:
        return text
    try:
        return int(text)
    except ValueError:
        want = " | ".join(STEP_MODES)
        raise CommandError(f"--step={text!r}: expected {want} or a flow step index, e.g. -1") from None


@app.command()
def run(
    episodes: Annotated[str, typer.Option(help=EPISODES_HELP)],
    out: Annotated[Path, typer.Option(help="Output folder (rerun the same command to resume).")],
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "tiny_vla",
    layers: Annotated[str, typer.Option(help="Decoder / expert layers, comma-separated (negative from the end).")] = (
        "1,2,3"
    ),
    every: Annotated[int, typer.Option(min=1, help="A keyframe every N frames (8: the open-loop chunk).")] = 8,
    keyframes: Annotated[str | None, typer.Option(help="Explicit keyframes, comma-separated (overrides --every).")] = (
        None
    ),
    phases: Annotated[
        str,
        typer.Option(help="Comma-separated, from: " + ", ".join(f"{p} ({PHASE_QUERIES[p]})" for p in PHASES) + "."),
    ] = ",".join(PHASES),
    step: Annotated[
        str, typer.Option(help=f"Suffix flow steps: {' | '.join(STEP_MODES)} | a step index (negative from the end).")
    ] = STEP_MODES[0],
    heads: Annotated[bool, typer.Option(help="Also draw every head (--no-heads: the most active one only).")] = True,
    videos: Annotated[bool, typer.Option(help="Write WebM / MP4 videos over the keyframes.")] = True,
    mode: Annotated[Mode, typer.Option(help="Map normalisation, each map on its own.")] = "minmax",
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Episodes processed in parallel processes (not under torchrun: its ranks split them)."
        ),
    ] = 1,
    camera_map: Annotated[
        str | None, typer.Option(help="Dataset camera -> policy camera, e.g. varied_camera_1=observation.images.base.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    threads: int | None = threads_option(),
) -> None:
    """Tap POLICY's attention on every keyframe of every episode; images, videos and float16 arrays in OUT."""
    from policylens.attention import AttentionInterrupted, AttentionRunConfig, run_attention
    from policylens.data import parse_camera_map
    from policylens.runs import env_world, shard

    rank, world, _ = env_world()
    if workers > 1 and world > 1:
        raise CommandError(
            f"--workers {workers} under torchrun ({world} ranks): the ranks already split the episodes; "
            "drop --workers, or run without torchrun"
        )
    n = apply_threads(threads)
    try:
        config = AttentionRunConfig(
            layers=_ints(layers, "--layers"),
            every=every,
            keyframes=_ints(keyframes, "--keyframes") if keyframes is not None else None,
            phases=_phases(phases),
            step=_step(step),
            heads=heads,
            videos=videos,
            mode=mode,
            camera_map=parse_camera_map(camera_map) if camera_map else {},
        )
    except ValueError as exc:  # name the option, not the config field
        msg = re.sub(r"AttentionRunConfig\.(\w+)", lambda m: "--" + m[1].replace("_", "-"), str(exc))
        raise CommandError(msg) from None
    per_worker = f" ({max(1, n // workers)} in each of {workers} workers)" if workers > 1 else ""
    typer.echo(f"torch threads: {n}{per_worker}")
    try:
        done = run_attention(policy, episodes, out, config=config, workers=workers, overwrite=overwrite)
    except AttentionInterrupted as exc:
        raise interrupted(exc) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted before the run started; nothing written to {out}", err=True)
        raise typer.Exit(130) from None
    if rank:
        mine = len(shard(done, rank, world))
        typer.echo(f"rank {rank}/{world}: {mine} of {len(done)} episodes; rank 0 wrote the summaries in {out}")
        return
    typer.echo(f"{len(done)} episodes, {sum(len(d['keyframes']) for d in done)} keyframes -> {out}")


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="An attention run folder (the --out of `policylens attention run`).")],
    examples: Annotated[int, typer.Option(min=0, help="Example episodes per outcome whose overlays are shown.")] = 3,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples of the episodes per interval.")] = 2000,
) -> None:
    """Write OUT/report.html (self-contained) and OUT/report.md: attention mass per layer with intervals
    over episodes, success vs failure, example overlays and links to the videos."""
    from policylens.attention import write_report

    html_path, md_path = write_report(out, n_boot=n_boot, examples=examples)
    typer.echo(f"{html_path}\n{md_path}")
