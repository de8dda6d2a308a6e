"""``policylens cache``: build, inspect and verify anchor-cache feature stores.

``build`` wraps :func:`policylens.anchors.build_cache`; ``info`` and ``verify`` wrap
``store_info`` / ``verify_store``. Each exits 1 when the store is not sound, 2 on bad input
(no store there, settings that differ from the store's). ``build`` stopped by Ctrl-C or
SIGTERM keeps every computed sample, says how many in one line and exits 130 / 143; the same
command resumes it. The choices of ``--kind`` / ``--pooling`` / ``--dtype`` are the library's
own tuples (mirrored in ``_common``, so that ``policylens`` starts without torch; the bridge
poolings here). ``--bridge-flow-steps`` / ``--bridge-pooling`` / ``--bridge-action`` set the
bridge recipe's ``flow_steps``, ``pooling`` and ``action`` (``--bridge-action-only``: ``action``
without the hidden features, ``hidden=False``) (recorded in the manifest's
``meta.bridge``; ``retain train`` reads them from there).
``verify --repair`` drops the done markers of damaged chunks and prints the ``cache build``
command, rebuilt from the manifest, that recomputes just those chunks (rebuilding needs the
policy and the dataset, which the store does not hold).
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from ._app import new_app
from ._common import BRIDGE_POOLING_CHOICES, DATASET_HELP, POLICY_HELP, POLICY_KINDS, POOLINGS, STORE_DTYPES
from ._errors import EXIT_KNOWN, CommandError
from ._threads import apply_threads, threads_option

CLI_DATASETS = ("synthetic:", "droid:", "lerobot:")  # the dataset ids `cache build` records (a PATH gets its format)

Kind = Literal[POLICY_KINDS]  # click shows and checks these choices
Pooling = Literal[POOLINGS]
Dtype = Literal[STORE_DTYPES]
BridgePooling = Literal[BRIDGE_POOLING_CHOICES]

app = new_app("Anchor caches: build, inspect and verify feature stores.")


@app.command()
def build(
    policy: str = typer.Option("tiny_vla", help=POLICY_HELP),
    dataset: str = typer.Option("synthetic:64", help=DATASET_HELP),
    kind: Annotated[
        Kind,
        typer.Option(help="What to store; bridge: CRaFT [C_R ; C_AQ] (align stores come from `policylens align`)."),
    ] = "hidden_feature",
    layer: Annotated[list[int] | None, typer.Option(help="LLM layer index (default -2); repeatable.")] = None,
    pooling: Annotated[Pooling, typer.Option(help="How a layer's tokens are pooled.")] = "mean_image_tokens",
    dtype: Annotated[Dtype, typer.Option(help="Dtype of the stored features.")] = "float16",
    batch_size: int = typer.Option(8, min=1, help="Samples per forward."),
    store_input: Annotated[list[str] | None, typer.Option(help="Input to store too (input_ids); repeatable.")] = None,
    camera_map: str | None = typer.Option(
        None, help="Dataset camera -> policy camera, e.g. side=varied_camera_1,wrist=hand_camera (episode datasets)."
    ),
    bridge_flow_steps: str | None = typer.Option(
        None, help="--kind bridge: flow steps whose expert layer is kept, e.g. 0,4,9, or all \\[default: 0]."
    ),
    bridge_pooling: Annotated[
        BridgePooling | None,
        typer.Option(
            help="--kind bridge: pooling over the bridge positions; none keeps every token \\[default: masked_mean]."
        ),
    ] = None,
    bridge_action: bool = typer.Option(
        False, "--bridge-action", help="--kind bridge: add the action head's output at each bridge flow step."
    ),
    bridge_action_only: bool = typer.Option(
        False,
        "--bridge-action-only",
        help="--kind bridge: the action head's output alone, no hidden features (action distillation's targets).",
    ),
    out: str = typer.Option(..., help="Store directory (rerun the same command to resume)."),
    threads: int | None = threads_option(),
) -> None:
    """Run POLICY over DATASET and write (or resume) a feature store; torchrun ranks split the work."""
    from policylens.anchors import build_cache
    from policylens.data import parse_camera_map
    from policylens.store import BuildInterrupted, StoreError, rank_ranges

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    who = f"rank {rank}/{world}: " if world > 1 else ""
    bridge = _bridge_options(bridge_flow_steps, bridge_pooling, bridge_action, action_only=bridge_action_only)
    if bridge and kind != "bridge":
        raise CommandError(
            f"--bridge-* options ({', '.join(sorted(bridge))}) apply to --kind bridge; got --kind {kind}"
        )
    try:
        cameras = parse_camera_map(camera_map) if camera_map else None
        used = apply_threads(threads)
        typer.echo(f"torch threads: {used}")
        m = build_cache(
            policy,
            dataset,
            out,
            kind=kind,
            layers=layer or [-2],
            pooling=pooling,
            dtype=dtype,
            batch_size=batch_size,
            store_inputs=store_input or [],
            camera_map=cameras,
            bridge=bridge,
        )
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_KNOWN) from None
    except BuildInterrupted as exc:  # the store's kept samples, counted once this process's are on disk
        typer.echo(
            f"{who}interrupted: kept {exc.kept} of {exc.total} samples in {out}; rerun the same command to resume"
        )
        raise typer.Exit(128 + exc.signum) from None
    line = f"{out}: {m['kind']}, {m['num_samples']} samples, complete {m['complete'] or 'not yet (other ranks)'}"
    if world > 1:
        line += f"; rank {rank}/{world} computed samples {rank_ranges(m, rank, world)}"
    typer.echo(line)


def _bridge_options(flow_steps: str | None, pooling: str | None, action: bool, action_only: bool = False) -> dict:
    """``build_cache(bridge=...)`` from the ``--bridge-*`` options (only those given)."""
    out: dict = {}
    if flow_steps is not None:
        text = flow_steps.strip()
        try:
            out["flow_steps"] = "all" if text == "all" else tuple(int(p) for p in text.split(","))
        except ValueError:
            raise CommandError(
                f"--bridge-flow-steps {flow_steps!r}: expected comma-separated flow-step indices (e.g. 0,4,9) or all"
            ) from None
    if pooling is not None:
        out["pooling"] = pooling
    if action or action_only:
        out["action"] = True
    if action_only:
        out["hidden"] = False
    return out


def _bridge_args(settings: dict) -> list[str] | None:
    """The ``--kind bridge`` arguments that rebuild ``meta.bridge``; None when the store holds
    settings ``cache build`` does not offer (other positions or noise seed)."""
    offered = {"raw_positions": "image", "query_positions": "action", "noise_seed": 0}
    if any(settings.get(k, v) != v for k, v in offered.items()):
        return None
    args = ["--kind", "bridge"]  # build_cache picks the bridge layers itself
    steps = settings.get("flow_steps", [0])
    if steps != [0]:
        args += ["--bridge-flow-steps", steps if isinstance(steps, str) else ",".join(map(str, steps))]
    if settings.get("pooling", "masked_mean") not in ("masked_mean", "mean"):
        args += ["--bridge-pooling", settings["pooling"]]
    if settings.get("hidden", True) is False:
        return [*args, "--bridge-action-only"]
    return args + (["--bridge-action"] if settings.get("action") else [])


def build_command(path: str) -> str | None:
    """The ``policylens cache build`` command that wrote the store at ``path``, rebuilt from its
    manifest; ``None`` when the store was not written by that command (its dataset id is not a
    ``--dataset`` spec, or ``policylens align`` wrote it: kinds ``patch_grid`` / ``point_cloud``)."""
    from policylens.store import read_manifest

    m = read_manifest(path)
    meta = m["meta"]
    if not str(meta.get("dataset_id", "")).startswith(CLI_DATASETS) or _align_store(m):
        return None
    args = ["policylens", "cache", "build", "--policy", meta["model_id"], "--dataset", meta["dataset_id"]]
    if meta.get("bridge"):
        bridge = _bridge_args(meta["bridge"])
        if bridge is None:
            return None
        args += bridge
    else:
        args += ["--kind", m["kind"], *[a for i in meta["layers"] for a in ("--layer", str(i))]]
        args += ["--pooling", meta["pooling"]]
    args += ["--dtype", meta["dtype"]]
    if m.get("batch_size") is not None:
        args += ["--batch-size", str(m["batch_size"])]
    args += [a for k, f in m["fields"].items() if f["role"] == "input" for a in ("--store-input", k)]
    cameras = (meta.get("extra") or {}).get("camera_map")
    if cameras:
        args += ["--camera-map", ",".join(f"{k}={v}" for k, v in sorted(cameras.items()))]
    return shlex.join([*args, "--out", path])


def _align_store(manifest: dict) -> bool:
    return "align" in (manifest["meta"].get("extra") or {})


def _rerun_hint(path: str) -> str:
    from policylens.store import read_manifest

    cmd = build_command(path)
    if cmd is None and _align_store(read_manifest(path)):
        return "rerun the `policylens align extract` / `align ingest` command that wrote it (same arguments)"
    if cmd is None:
        return "rerun the build_store(...) call that wrote the store (same arguments)"
    note = "" if read_manifest(path).get("batch_size") is not None else " (add the original --batch-size)"
    return f"rerun its build{note}:\n  {cmd}"


@app.command()
def info(
    path: str = typer.Argument(..., help="Store directory."),
    check: bool = typer.Option(True, help="Read every chunk to compare its crc32c (--no-check: file sizes only)."),
) -> None:
    """Print kind, sizes, fields, provenance and completeness of a store; exit 1 if samples are missing."""
    from policylens.store import ChunkDamage, StoreError, store_info

    try:
        res = store_info(path, check=check)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_KNOWN) from None
    Console(width=160).print_json(json.dumps(res))
    if res["missing"]:
        for d in res["damaged"]:
            typer.echo(f"problem: {ChunkDamage(**d)}", err=True)
        fix = f"run `policylens cache verify --repair {path}` and " if res["damaged"] else ""
        typer.echo(f"error: {path}: samples {res['missing']} are missing; {fix}{_rerun_hint(path)}", err=True)
        raise typer.Exit(1)


@app.command()
def verify(
    path: str = typer.Argument(..., help="Store directory."),
    repair: bool = typer.Option(False, help="Drop damaged chunks' done markers; print the build that redoes them."),
) -> None:
    """Check shapes, dtypes, chunks and their crc32c checksums, completeness, NaN/Inf and statistics;
    exit 1 on any problem."""
    from policylens.store import StoreError, verify_store

    try:
        rep = verify_store(path, repair=repair)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_KNOWN) from None
    console = Console(width=160, soft_wrap=True)
    for name, st in rep.stats.items():
        console.print(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in st.items()))
    for w in rep.warnings:
        console.print(f"[yellow]warning[/]: {escape(w)}")
    for p in rep.problems:
        console.print(f"[red]problem[/]: {escape(p)}")
    if rep.repaired:
        ranges = sorted({(d.start, d.stop) for d in rep.damaged})
        typer.echo(
            f"removed done markers of chunks {rep.repaired} (samples {[list(r) for r in ranges]}); "
            f"to recompute just those chunks, {_rerun_hint(path)}"
        )
    elif rep.damaged:
        typer.echo(
            f"run `policylens cache verify --repair {path}` to drop the damaged chunks and get the build to rerun"
        )
    elif rep.incomplete:
        typer.echo(f"samples {rep.incomplete} are not built yet; to finish them, {_rerun_hint(path)}")
    console.print(f"{escape(path)}: " + ("[green]OK[/]" if rep.ok else f"[red]{len(rep.problems)} problem(s)[/]"))
    if not rep.ok:
        raise typer.Exit(1)
