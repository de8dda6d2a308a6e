"""``policylens cache``: build, inspect and verify anchor-cache feature stores.

``build`` wraps :func:`policylens.anchors.build_cache`; ``info`` and ``verify`` wrap
``store_info`` / ``verify_store``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from policylens.store import StoreError, store_info, verify_store

app = typer.Typer(help="Anchor caches: build, inspect and verify feature stores.", no_args_is_help=True)


@app.command()
def build(
    policy: str = typer.Option("tiny_vla", help="Built-in policy name or checkpoint directory."),
    dataset: str = typer.Option("synthetic:64", help="Dataset spec: synthetic:N, droid:PATH or lerobot:PATH."),
    kind: str = typer.Option("hidden_feature", help="hidden_feature | hidden_state | token_level | bridge (CRaFT)."),
    layer: Annotated[list[int] | None, typer.Option(help="LLM layer index (default -2); repeatable.")] = None,
    pooling: str = typer.Option("mean_image_tokens", help="mean_image_tokens | masked_mean | first | last | none."),
    dtype: str = typer.Option("float16", help="float16 | bfloat16 | float32."),
    batch_size: int = typer.Option(8, min=1, help="Samples per forward."),
    store_input: Annotated[list[str] | None, typer.Option(help="Input to store too (input_ids); repeatable.")] = None,
    out: str = typer.Option(..., help="Store directory (rerun the same command to resume)."),
) -> None:
    """Run POLICY over DATASET and write (or resume) a feature store; torchrun ranks split the work."""
    from policylens.anchors import build_cache

    m = build_cache(policy, dataset, out, kind, layer or [-2], pooling, dtype, batch_size, store_input or [])
    typer.echo(f"{out}: {m['kind']}, {m['num_samples']} samples, complete {m['complete'] or 'not yet (other ranks)'}")


@app.command()
def info(path: str = typer.Argument(..., help="Store directory.")) -> None:
    """Print kind, sizes, fields, provenance and completeness of a store."""
    try:
        Console(width=160).print_json(json.dumps(store_info(path)))
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def verify(
    path: str = typer.Argument(..., help="Store directory."),
    repair: bool = typer.Option(False, help="Drop done markers of damaged chunks so a rerun of build redoes them."),
) -> None:
    """Check shapes, dtypes, chunks, completeness, NaN/Inf and statistics; exit 1 on any problem."""
    rep = verify_store(path, repair=repair)
    console = Console(width=160)
    for name, st in rep.stats.items():
        console.print(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in st.items()))
    for w in rep.warnings:
        console.print(f"[yellow]warning[/]: {w}")
    for p in rep.problems:
        console.print(f"[red]problem[/]: {p}")
    if rep.repaired:
        console.print(f"removed done markers of chunks {rep.repaired}; rerun the build command to recompute them")
    console.print(f"{path}: " + ("[green]OK[/]" if rep.ok else f"[red]{len(rep.problems)} problem(s)[/]"))
    if not rep.ok:
        raise typer.Exit(1)
