"""``policylens attention``: attention maps, overlays and videos of a policy over episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import new_app
from ._errors import CommandError

app = new_app("Attention analysis: maps, overlays and videos over DROID / LeRobot episodes.")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CommandError(f"{option}={text!r}: expected comma-separated integers, e.g. 1,2,3") from None


@app.command()
def run(
    episodes: Annotated[str, typer.Option(help="droid:PATH, lerobot:PATH, or a folder holding either.")],
    out: Annotated[Path, typer.Option(help="Output folder (rerun the same command to resume).")],
    policy: Annotated[str, typer.Option(help="Built-in policy name or checkpoint directory.")] = "tiny_vla",
    layers: Annotated[str, typer.Option(help="Decoder / expert layers, comma-separated (negative from the end).")] = (
        "1,2,3"
    ),
    every: Annotated[int, typer.Option(min=1, help="A keyframe every N frames (8: the open-loop chunk).")] = 8,
    keyframes: Annotated[str | None, typer.Option(help="Explicit keyframes, comma-separated (overrides --every).")] = (
        None
    ),
    phases: Annotated[str, typer.Option(help="prefix (text -> image), suffix (action -> image) or both.")] = (
        "prefix,suffix"
    ),
    step: Annotated[str, typer.Option(help="Suffix flow steps: mean | last | a step index.")] = "mean",
    heads: Annotated[bool, typer.Option(help="Also draw every head (--no-heads: the most active one only).")] = True,
    videos: Annotated[bool, typer.Option(help="Write WebM / MP4 videos over the keyframes.")] = True,
    mode: Annotated[str, typer.Option(help="Map normalisation: minmax (per map) | log.")] = "minmax",
    workers: Annotated[int, typer.Option(min=1, help="Episodes processed in parallel processes.")] = 1,
    camera_map: Annotated[
        str | None, typer.Option(help="Dataset camera -> policy camera, e.g. varied_camera_1=observation.images.base.")
    ] = None,
) -> None:
    """Tap POLICY's attention on every keyframe of every episode; images, videos and float16 arrays in OUT."""
    from policylens.anchors import parse_camera_map
    from policylens.attention import AttentionRunConfig, run_attention

    config = AttentionRunConfig(
        layers=_ints(layers, "--layers"),
        every=every,
        keyframes=_ints(keyframes, "--keyframes") if keyframes else None,
        phases=tuple(p.strip() for p in phases.split(",") if p.strip()),
        step=int(step) if step.lstrip("-").isdigit() else step,
        heads=heads,
        videos=videos,
        mode=mode,
        camera_map=parse_camera_map(camera_map) if camera_map else {},
    )
    done = run_attention(policy, episodes, out, config, workers=workers)
    typer.echo(f"{len(done)} episodes, {sum(len(d['keyframes']) for d in done)} keyframes -> {out}")


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="An attention run folder (the --out of `policylens attention run`).")],
    examples: Annotated[int, typer.Option(min=0, help="Example episodes per outcome whose overlays are shown.")] = 3,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples of the episodes per interval.")] = 2000,
) -> None:
    """Write OUT/report.html (self-contained) and OUT/report.md: attention mass per layer with intervals
    over episodes, success vs failure, example overlays and links to the videos."""
    from policylens.attention._report import write_report

    html_path, md_path = write_report(out, n_boot=n_boot, examples=examples)
    typer.echo(f"{html_path}\n{md_path}")
