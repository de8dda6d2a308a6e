"""``policylens attention``: attention maps, overlays and videos of a policy over episodes; the
faithfulness tests (``attention faithfulness``) and the modality-ablation battery (``attention ablate``).

``attention run`` and ``attention ablate`` also run under ``torchrun --no-python ... policylens attention
run | ablate``: each rank takes a block of the episodes (ablate: of the episodes, then the closed-loop
conditions), rank 0 writes the summaries (``--workers`` is refused there).

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


@app.command()
def ablate(
    out: Annotated[Path, typer.Option(help="Output folder (an attention run's folder is fine; rerun to resume).")],
    episodes: Annotated[
        str | None, typer.Option(help=EPISODES_HELP + " Open loop; leave out: closed loop only.")
    ] = None,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "tiny_vla",
    conditions: Annotated[
        str,
        typer.Option(
            help="Comma-separated: CAMERA:KIND (black, mean, noise, blur, time, removed), cameras:KIND (black, swap, "
            "removed), instruction:KIND (empty, other, shuffled), a bare kind or target, or all."
        ),
    ] = "all",
    layers: Annotated[
        str | None, typer.Option(help="Decoder layers whose attention mass is read (default: every layer).")
    ] = None,
    every: Annotated[int, typer.Option(min=1, help="A keyframe every N frames (open loop).")] = 8,
    keyframes: Annotated[str | None, typer.Option(help="Explicit keyframes, comma-separated (overrides --every).")] = (
        None
    ),
    sim_episodes: Annotated[
        int, typer.Option(min=0, help="Closed loop: held-out simulator layouts per condition (0: none).")
    ] = 0,
    task: Annotated[str, typer.Option(help="Simulator task of the closed loop.")] = "reach",
    batch: Annotated[int, typer.Option(min=1, help="Closed loop: environments stepped together.")] = 10,
    origin: Annotated[
        str, typer.Option(help="auto | state (absolute targets: chunk minus state) | none (delta actions).")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Flow noise (seed + 1: the noise floor), layouts in closed loop.")] = 0,
    camera_map: Annotated[
        str | None, typer.Option(help="Dataset camera -> policy camera, e.g. varied_camera_1=observation.images.base.")
    ] = None,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples of the episodes per interval.")] = 2000,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    threads: int | None = threads_option(),
) -> None:
    """Ablate each camera and the instruction (open loop over episodes, closed loop in the simulator):
    OUT/ablation.json and OUT/ablation.png; `attention report OUT` shows them."""
    from policylens.attention import AblationConfig, AblationInterrupted, run_ablation
    from policylens.data import parse_camera_map
    from policylens.runs import env_world

    if origin not in ("auto", "state", "none"):
        raise CommandError(f"--origin={origin!r}: expected auto, state or none")
    if episodes is None and not sim_episodes:
        raise CommandError("nothing to ablate: pass --episodes (open loop) and/or --sim-episodes N (closed loop)")
    n = apply_threads(threads)
    typer.echo(f"torch threads: {n}")
    try:
        config = AblationConfig(
            conditions=None if conditions == "all" else tuple(c.strip() for c in conditions.split(",") if c.strip()),
            layers=_ints(layers, "--layers") if layers is not None else None,
            every=every,
            keyframes=_ints(keyframes, "--keyframes") if keyframes is not None else None,
            seed=seed,
            origin=origin,
            camera_map=parse_camera_map(camera_map) if camera_map else {},
            sim_episodes=sim_episodes,
            task=task,
            sim_batch=batch,
        )
    except ValueError as exc:
        msg = re.sub(r"AblationConfig\.(\w+)", lambda m: "--" + m[1].replace("_", "-"), str(exc))
        raise CommandError(msg) from None
    try:
        result = run_ablation(policy, episodes, out, config=config, overwrite=overwrite, n_boot=n_boot)
    except AblationInterrupted as exc:
        raise interrupted(exc) from None
    rank, world, _ = env_world()
    if rank:
        typer.echo(f"rank {rank}/{world}: its parts written; rank 0 wrote {out / 'ablation.json'}")
        return
    for row in result["closed_loop"]:
        typer.echo(f"closed loop {row['condition']}: {row['successes']}/{row['n']}")
    typer.echo("\n".join(result["findings"]) or "no finding: no interval excludes zero")
    typer.echo(f"{out / 'ablation.json'}\n{out / 'ablation.png'}")


@app.command()
def faithfulness(
    episodes: Annotated[str, typer.Option(help=EPISODES_HELP)],
    out: Annotated[Path, typer.Option(help="Folder for faithfulness.json (an attention run's, for its report).")],
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "tiny_vla",
    layers: Annotated[str, typer.Option(help="Decoder layers whose prefix map is tested, comma-separated.")] = "1,3",
    area: Annotated[float, typer.Option(min=0.0, max=1.0, help="Masked share of each frame.")] = 0.1,
    n_random: Annotated[int, typer.Option(min=1, help="Equal-area random blobs per keyframe.")] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Keyframes per forward.")] = 8,
    control: Annotated[bool, typer.Option(help="Also test a randomised-weights twin (TinyVLA).")] = True,
    camera_map: Annotated[
        str | None, typer.Option(help="Dataset camera -> policy camera, e.g. varied_camera_1=observation.images.base.")
    ] = None,
    threads: int | None = threads_option(),
) -> None:
    """Mask the high-attention area vs equal-area controls, deletion curves, a randomised-weights control:
    OUT/faithfulness.json (the report's faithfulness section) and the tables printed."""
    from policylens.attention import faithfulness_tables, run_faithfulness
    from policylens.data import parse_camera_map

    if area <= 0:
        raise CommandError(f"--area={area}: expected a share of the frame in (0, 1], e.g. 0.1")
    n = apply_threads(threads)
    typer.echo(f"torch threads: {n}")
    cmap = parse_camera_map(camera_map) if camera_map else {}
    result = run_faithfulness(
        policy, episodes, out, layers=_ints(layers, "--layers"), area=area, n_random=n_random, batch=batch,
        camera_map=cmap, control=control,
    )  # fmt: skip
    typer.echo(faithfulness_tables(result))
    typer.echo(str(out / "faithfulness.json"))
