"""``policylens align``: patch features and point clouds into stores for RGB <-> point-cloud alignment.

``extract`` wraps :func:`policylens.align.extract_features` (one store per encoder under ``--out``),
``ingest`` wraps :func:`~policylens.align.ingest_depth` / :func:`~policylens.align.ingest_ply`,
``verify`` wraps :func:`~policylens.align.verify_align` (exit 1 when a store has problems),
``train`` wraps :func:`~policylens.align.train_alignment` (stage 1), ``head``
:func:`~policylens.align.train_action_head` and ``rollout`` :func:`~policylens.align.rollout_heads`
(stage 2), ``distill`` :func:`~policylens.align.distill_student` (stage 3). Rerun the same command to
resume a killed one. ``train``, ``distill`` and ``head`` run under ``torchrun --no-python ...
policylens align ...`` too: every rank trains its share of each global batch, rank 0 writes OUT and
prints the summary, the other ranks one line each.

The choices are the job's own tuples (``OBJECTIVES``, ``FUSION_MODES``, ``AMP_MODES``, ``SOURCES``)
and the store's dtypes (``STORE_DTYPES``), mirrored in ``_common`` so that ``policylens`` starts
without importing the job or torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from ._app import new_app
from ._common import (
    AMP_MODES,
    EPISODES_FORMS,
    EPISODES_HELP,
    FUSION_MODES,
    OBJECTIVES,
    OVERWRITE_HELP,
    SOURCES,
    STORE_DTYPES,
    interrupted,
)
from ._errors import CommandError
from ._threads import apply_threads, threads_option

app = new_app(
    "RGB <-> point-cloud alignment: extract patch features, ingest point clouds, verify the stores, train, "
    "distill, and compare the sources under one action head in closed loop."
)

DEVICE_HELP = "torch device: cpu, cuda or cuda:N (under torchrun: cpu, or cuda for each rank's own GPU)."
BATCH_HELP = "Frames (windows) per step, over all torchrun ranks (each reads its share)."
AMP_HELP = "Mixed precision: bf16 on CPU or CUDA, fp16 on CUDA (with a GradScaler)."

Dtype = Literal[STORE_DTYPES]  # the feature dtypes a store holds
Objective = Literal[OBJECTIVES]  # stage-1 losses; spatial_forcing is the baseline
Fusion = Literal[FUSION_MODES]  # how several encoders' features are fused
Amp = Literal[AMP_MODES]
Source = Literal[SOURCES]  # stage-2 head inputs


_MADE_BY = {"frames": "an `align extract` feature store", "windows": "an `align extract` feature store",
            "points": "an `align ingest` point store"}  # fmt: skip


def check_stores(points: str | None = None, features: list[str] = ()) -> None:
    """Refuse, in one line, a point store given as --features or a feature store as --points (or
    both: swapped), before the job reads them."""
    from policylens.align import align_info

    def what(path: str) -> str:
        return align_info(path)["layout"]

    wrong_points = points is not None and what(points) != "points"
    wrong_features = [f for f in features if what(f) == "points"]
    if wrong_points and wrong_features:
        right = " ".join(f"--features {f}" for f in [points, *(f for f in features if f not in wrong_features)])
        raise CommandError(
            f"--points {points} is {_MADE_BY[what(points)]} and --features {wrong_features[0]} is "
            f"{_MADE_BY['points']}: swapped; pass --points {wrong_features[0]} {right}"
        )
    if wrong_points:
        raise CommandError(
            f"--points {points} is {_MADE_BY[what(points)]}; pass the store that `policylens align ingest` wrote"
        )
    if wrong_features:
        also = ", and the point store as --points" if points is not None else ""
        raise CommandError(
            f"--features {wrong_features[0]} is {_MADE_BY['points']}; pass a store that "
            f"`policylens align extract` wrote (OUT/ENCODER){also}"
        )


def _other_rank(res: dict, out: str) -> bool:
    """On a torchrun rank other than 0: say what it did, in one line (rank 0 prints the summary)."""
    if res.get("rank", 0) == 0:
        return False
    typer.echo(f"rank {res['rank']}/{res['world']}: trained its share of every batch to step {res['step']}; "
               f"rank 0 wrote {out}")  # fmt: skip
    return True


def _kept(out: str) -> typer.Exit:
    typer.echo(f"interrupted: the finished chunks are kept in {out}; rerun the same command to resume", err=True)
    return typer.Exit(130)


@app.command()
def extract(
    episodes: str = typer.Option(..., help=EPISODES_HELP),
    encoder: Annotated[
        list[str],
        typer.Option(
            help="NAME (tiny random weights), NAME=DIR (a saved HF model) or NAME=CONFIG.json (config fields, "
            "random weights); repeatable, one store each."
        ),
    ] = ...,
    camera: str = typer.Option(..., help="Camera whose frames are encoded."),
    out: str = typer.Option(..., help="Folder; each encoder's store goes to OUT/NAME (rerun to resume)."),
    stride: int | None = typer.Option(None, min=1, help="Window starts, for multi-frame encoders (default: window)."),
    dtype: Annotated[Dtype, typer.Option(help="Feature dtype in the store.")] = "float16",
    batch_size: int = typer.Option(16, min=1, help="Frames (or windows) per forward."),
    seed: int = typer.Option(0, help="Seed of random-weight encoders."),
    threads: int | None = threads_option(),
) -> None:
    """Patch features of CAMERA's frames, one store per ENCODER, with each frame's episode and step."""
    from policylens.align import build_encoder, extract_features
    from policylens.data import open_episodes

    typer.echo(f"torch threads: {apply_threads(threads)}")

    eps = open_episodes(episodes)
    names = [spec.partition("=")[0] for spec in encoder]
    if len(set(names)) != len(names):
        raise CommandError(f"--encoder: {names} names an encoder twice; each writes OUT/NAME, give each once")
    for spec in encoder:
        name, _, source = spec.partition("=")
        enc, model_id = build_encoder(name, source or None, seed=seed)
        dest = Path(out) / name
        try:
            m = extract_features(
                eps, enc, dest, camera=camera, stride=stride, dtype=dtype, batch_size=batch_size,
                model_id=model_id, dataset_id=episodes,
            )  # fmt: skip
        except KeyboardInterrupt:
            raise _kept(str(dest)) from None
        info = m["meta"]["extra"]["align"]
        typer.echo(f"{dest}: {m['num_samples']} {info['layout']} of grid {info['grid']}, window {info['window']}")


@app.command()
def ingest(
    out: str = typer.Option(..., help="Point store directory (rerun to resume)."),
    episodes: str | None = typer.Option(None, help=f"Back-project the depth of these episodes: {EPISODES_FORMS}."),
    ply: str | None = typer.Option(
        None, help="PLY files instead, a pattern such as 'clouds/ep{episode:d}/{step:04d}.ply'."
    ),
    camera: str | None = typer.Option(None, help="Camera (needed with --episodes; recorded with --ply)."),
    points: int = typer.Option(1024, min=1, help="Points per frame: subsample or pad (with valid = False)."),
    stride: int = typer.Option(1, min=1, help="Back-project every STRIDE-th pixel (--episodes)."),
    frame_size: str | None = typer.Option(None, help="HxW of the frames the PLY uv refer to (checked by the dataset)."),
    feature_prefix: str = typer.Option("feat_", help="PLY per-point feature properties PREFIX0 .. PREFIX{D-1}."),
    seed: int = typer.Option(0, help="Seed of the subsampling."),
    threads: int | None = threads_option(),
) -> None:
    """Point clouds (xyz, rgb, uv, valid, object id, features) per (episode, step) into a store."""
    typer.echo(f"torch threads: {apply_threads(threads)}")
    try:
        _ingest(
            out, episodes=episodes, ply=ply, camera=camera, points=points, stride=stride, frame_size=frame_size,
            feature_prefix=feature_prefix, seed=seed,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise _kept(out) from None


def _ingest(out, *, episodes, ply, camera, points, stride, frame_size, feature_prefix, seed) -> None:
    from policylens.align import ingest_depth, ingest_ply

    if (episodes is None) == (ply is None):
        raise CommandError("align ingest: pass exactly one of --episodes (depth + calibration) or --ply PATTERN")
    if ply is not None:
        size = None
        if frame_size is not None:
            h, x, w = frame_size.lower().partition("x")
            if not (x and h.isdigit() and w.isdigit()):
                raise CommandError(f"--frame-size {frame_size!r}: expected HxW, e.g. 224x224")
            size = (int(h), int(w))
        m = ingest_ply(
            ply, out, points=points, seed=seed, feature_prefix=feature_prefix, camera=camera, frame_size=size
        )
    else:
        from policylens.data import open_episodes

        if camera is None:
            raise CommandError("align ingest --episodes: --camera is required (the depth camera to back-project)")
        m = ingest_depth(
            open_episodes(episodes), out, camera=camera, points=points, stride=stride, seed=seed, dataset_id=episodes
        )
    typer.echo(f"{out}: {m['num_samples']} frames x {points} points")


@app.command()
def verify(
    path: str = typer.Argument(..., help="An align store, or a folder of them (extract's --out)."),
    min_cosine: float | None = typer.Option(None, help="Fail when adjacent frames' mean features are less similar."),
) -> None:
    """Shapes, dtypes, NaN/Inf and adjacent-frame / window similarity of align stores; exit 1 on problems."""
    from policylens.align import find_stores, verify_align

    checks = [verify_align(p, min_cosine) for p in find_stores(path)]
    table = Table(title=f"align stores in {path}")
    for col in ("store", "layout", "rows", "shape", "dtype", "NaN/Inf", "adjacent cos mean/min", "windows cos", "ok"):
        table.add_column(col)
    fmt = lambda s: "-" if s is None else f"{s[0]:.3f} / {s[1]:.3f}"  # noqa: E731
    for c in checks:
        row = (Path(c.path).name, c.layout, str(c.rows), c.shape, c.dtype, str(c.nonfinite))
        table.add_row(*row, fmt(c.adjacent_cos), fmt(c.window_cos), "yes" if c.ok else "NO")
    Console(width=200).print(table)
    for c in checks:
        for p in c.problems:
            typer.echo(f"problem: {c.path}: {p}")
        for w in c.warnings:
            typer.echo(f"warning: {c.path}: {w}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def train(
    points: str = typer.Option(..., help="Point store (`align ingest`)."),
    features: Annotated[list[str], typer.Option(help="Feature store (`align extract`), repeatable; fused.")] = ...,
    out: str = typer.Option(..., help="Output directory (the same command resumes there; other settings refused)."),
    objective: Annotated[Objective, typer.Option(help="Alignment loss (spatial_forcing: the baseline).")] = "infonce",
    steps: int = typer.Option(1000, min=1, help="Optimiser steps in total (raise it on a rerun to train on)."),
    dim: int = typer.Option(128, min=1, help="Width of the aligned space."),
    fusion: Annotated[Fusion, typer.Option(help="How the encoders' features are fused.")] = "softmax",
    batch_size: int = typer.Option(8, min=1, help=BATCH_HELP),
    max_rows: int = typer.Option(4096, min=1, help="Points per step (a seeded subset of the batch's)."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    amp: Annotated[Amp, typer.Option(help=AMP_HELP)] = "none",
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    held_out: float = typer.Option(0.2, help="Share of episodes held out for evaluation only."),
    eval_every: int = typer.Option(100, min=1, help="Held-out retrieval to TensorBoard every N steps."),
    save_every: int = typer.Option(200, min=1, help="Checkpoint every N steps."),
    seed: int = typer.Option(0, help="Seed of the split, the model and the batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    threads: int | None = threads_option(),
) -> None:
    """Stage 1: fused RGB patch features <-> point features; checkpoints, TensorBoard and eval in OUT."""
    from policylens.align import AlignTrainConfig, train_alignment
    from policylens.models import TrainingInterrupted

    check_stores(points, features)
    typer.echo(f"torch threads: {apply_threads(threads)}")
    config = AlignTrainConfig(
        objective=objective, steps=steps, dim=dim, fusion=fusion, batch_size=batch_size,
        max_rows=max_rows, lr=lr, amp=amp, device=device, held_out=held_out, eval_every=eval_every,
        save_every=save_every, seed=seed,
    )  # fmt: skip
    try:
        res = train_alignment(points, features, out, config=config, overwrite=overwrite)
    except TrainingInterrupted as exc:
        raise interrupted(exc) from None
    if _other_rank(res, out):
        return
    summary = json.loads(Path(res["eval"]).read_text())["summary"]
    for name, line in summary.items():
        typer.echo(f"{name}: {line}")
    typer.echo(f"step {res['step']} ({res['skipped']} skipped); model, checkpoint and TensorBoard logs in {out}")
    typer.echo(f"evaluation: {res['eval']}, {Path(out) / 'eval.md'}, {res['hist']}")


@app.command()
def distill(
    aligned: str = typer.Option(..., help="A finished `align train` --out."),
    features: str = typer.Option(..., help="The student's input: one `align extract` store of the same frames."),
    out: str = typer.Option(..., help="Output directory (the same command resumes there; other settings refused)."),
    steps: int = typer.Option(1000, min=1, help="Optimiser steps in total."),
    hidden: int = typer.Option(256, min=1, help="Hidden width of the student head."),
    batch_size: int = typer.Option(8, min=1, help=BATCH_HELP),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    amp: Annotated[Amp, typer.Option(help=AMP_HELP)] = "none",
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    save_every: int = typer.Option(200, min=1, help="Checkpoint every N steps."),
    seed: int = typer.Option(0, help="Seed of the student and the batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    threads: int | None = threads_option(),
) -> None:
    """Stage 3: an RGB-only student on FEATURES distilled into the aligned space of ALIGNED."""
    from policylens.align import DistillConfig, distill_student
    from policylens.models import TrainingInterrupted

    check_stores(features=[features])
    typer.echo(f"torch threads: {apply_threads(threads)}")
    config = DistillConfig(
        steps=steps, hidden=hidden, batch_size=batch_size, lr=lr, amp=amp, device=device, save_every=save_every,
        seed=seed,
    )  # fmt: skip
    try:
        res = distill_student(aligned, features, out, config=config, overwrite=overwrite)
    except TrainingInterrupted as exc:
        raise interrupted(exc) from None
    if _other_rank(res, out):
        return
    result = json.loads(Path(res["eval"]).read_text())
    typer.echo(f"student: held-out loss {result['held_out_loss']:.4f} | {result['summary']}")
    typer.echo(f"step {res['step']}; student, checkpoint and TensorBoard logs in {out}; evaluation: {res['eval']}")


@app.command()
def head(
    aligned: str = typer.Option(..., help="A finished `align train` --out (its stores name the camera and encoders)."),
    out: str = typer.Option(..., help="Output directory (the same command resumes there; other settings refused)."),
    source: Annotated[
        Source, typer.Option(help="The head's input: rgb aligned, raw unaligned, blind no image.")
    ] = "rgb",
    student: str | None = typer.Option(None, help="A finished `align distill` --out (for --source student)."),
    task: str = typer.Option("reach", help="Simulated task whose scripted expert is imitated."),
    episodes: int = typer.Option(200, min=2, help="Expert episodes recorded (the last 10% held out)."),
    steps: int = typer.Option(3000, min=1, help="Optimiser steps in total (raise it on a rerun to train on)."),
    batch_size: int = typer.Option(64, min=1, help="Frames per step, over all torchrun ranks."),
    width: int = typer.Option(128, min=1, help="Width of the head."),
    horizon: int = typer.Option(8, min=1, help="Actions predicted per chunk."),
    execute: int = typer.Option(4, min=1, help="Actions of each chunk executed in rollouts."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    seed: int = typer.Option(0, help="Seed of the episodes, the head and the batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    threads: int | None = threads_option(),
) -> None:
    """Stage 2: one action head on SOURCE's tokens of the expert's frames; then `align rollout`."""
    from policylens.align import HeadConfig, train_action_head
    from policylens.models import TrainingInterrupted

    typer.echo(f"torch threads: {apply_threads(threads)}")
    config = HeadConfig(
        source=source, task=task, episodes=episodes, steps=steps, batch_size=batch_size, width=width,
        horizon=horizon, execute=execute, lr=lr, device=device, seed=seed,
    )  # fmt: skip
    try:
        res = train_action_head(aligned, out, config, student=student, overwrite=overwrite)
    except TrainingInterrupted as exc:
        raise interrupted(exc) from None
    if _other_rank(res, out):
        return
    frames = res["frames"]
    typer.echo(
        f"head on {source}: step {res['step']}, held-out loss {res['held_out_loss']:.4f} "
        f"({frames['train']} training / {frames['held_out']} held-out frames); in {out}"
    )
    typer.echo(f"next: policylens align rollout --head {out} --episodes 50")


@app.command()
def rollout(
    head: Annotated[list[str], typer.Option(help="A finished `align head` --out; repeatable (one row each).")],
    episodes: int = typer.Option(50, min=1, help="Closed-loop rollouts per head, on evaluation layouts."),
    seed: int = typer.Option(0, help="Evaluation seed (layouts disjoint from training ones)."),
    device: str = typer.Option("cpu", help=DEVICE_HELP),
    threads: int | None = threads_option(),
) -> None:
    """Closed-loop success of each stage-2 head with its 95% interval, side by side."""
    from policylens.align import rollout_heads

    typer.echo(f"torch threads: {apply_threads(threads)}")

    table = Table("head", "source", "success", "95% interval")
    for row in rollout_heads(head, episodes=episodes, seed=seed, device=device):
        res = row["result"]
        lo, hi = res.interval
        table.add_row(
            row["path"], row["source"], f"{res.successes}/{res.n} ({res.success_rate:.0%})", f"[{lo:.1%}, {hi:.1%}]"
        )
    Console().print(table)
