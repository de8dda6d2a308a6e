"""``policylens cache``: build, inspect and verify anchor-cache feature stores.

``build`` runs a policy over a dataset through the tap core and writes a store with
:func:`policylens.store.build_store`; ``info`` and ``verify`` wrap ``store_info`` /
``verify_store``. The policy-side pieces (:func:`policy_extractor`, :func:`synthetic_source`)
live here because the store itself knows nothing about models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from torch import Tensor, nn

from policylens.store import BridgeSpec, StoreError, StoreMeta, build_store, hash_state_dict, store_info, verify_store

app = typer.Typer(help="Anchor caches: build, inspect and verify feature stores.", no_args_is_help=True)


class SyntheticSource:
    """``synthetic:N``: sample ``i`` is ``model.example_batch(1, seed=i)`` without the batch dim."""

    def __init__(self, model: nn.Module, n: int) -> None:
        if not hasattr(model, "example_batch"):
            raise StoreError(
                f"dataset 'synthetic:{n}' needs a policy with example_batch(); got {type(model).__name__}."
            )
        self.model, self.n = model, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.model.example_batch(1, seed=int(i)).items()}


def synthetic_source(model: nn.Module, dataset: str) -> SyntheticSource:
    """Parse ``--dataset``; ``synthetic:N`` is the one dataset spec supported so far."""
    kind, _, n = dataset.partition(":")
    if kind != "synthetic" or not n.isdigit() or int(n) < 1:
        raise StoreError(f"--dataset={dataset!r}: expected 'synthetic:N' with N >= 1 (e.g. synthetic:256).")
    return SyntheticSource(model, int(n))


def _forward(model: nn.Module) -> Callable[[dict[str, Tensor]], Any]:
    """The forward that computes the prefix hidden states (``run_prefix`` when the policy has one)."""
    run_prefix = getattr(model, "run_prefix", None)
    return run_prefix if run_prefix is not None else (lambda batch: model(**batch))


def policy_extractor(
    model: nn.Module, kind: str, layers: Sequence[int], pooling: str, dtype: str = "float32"
) -> tuple[Callable[[dict[str, Tensor]], dict[str, Tensor]], list[str]]:
    """An extractor for :func:`build_store` that taps ``llm.layers.{layer}.out`` and pools it.

    ``hidden_feature``: ``target_features (B, D)`` from the first layer; ``hidden_state``:
    ``teacher_hidden (B, n_layers, n_vecs, D)`` (n_vecs = 1 when pooled, else every prefix
    token); ``token_level``: ``labels (B, T)``, the argmax of the tied-embedding logits of
    ``llm.norm.out``. Returns the extractor and its tap names. Unpooled hidden states are cast
    to ``dtype`` as they are captured (the same values, half the bytes to move); pooled ones are
    pooled in float32 first.
    """
    from policylens.tap import capture, pool

    taps = ["llm.norm.out"] if kind == "token_level" else [f"llm.layers.{i}.out" for i in layers]
    forward = _forward(model)
    cast = dtype if kind == "hidden_state" and pooling == "none" else None

    def run(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        spans = model.token_layout(batch)["prefix"]
        with torch.no_grad(), capture(model, taps, dtype=cast, stop_early=True) as cap:
            forward(batch)
        if kind == "hidden_feature":
            return {"target_features": pool(cap[taps[0]], spans, pooling)}  # (B, D)
        if kind == "hidden_state":
            hs = [pool(cap[t], spans, pooling) for t in taps]  # L x (B, D) or (B, T, D)
            return {"teacher_hidden": torch.stack([h if h.dim() == 3 else h[:, None] for h in hs], 1)}
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        weight = embed.weight if embed is not None else model.paligemma.language_model.embed_tokens.weight
        return {"labels": (cap[taps[0]].float() @ weight.float().T).argmax(-1)}  # (B, T)

    return run, taps


def bridge_extractor(
    model: nn.Module, bridge: BridgeSpec
) -> tuple[Callable[[dict[str, Tensor]], dict[str, Tensor]], list[str]]:
    """CRaFT bridge features ``target_features (B, D_llm + D_expert)``: C_R = mean of
    ``llm.layers.{raw_layer}.out`` over image tokens, C_AQ = mean of
    ``expert.layers.{query_layer}.out`` over action-query tokens at the first flow step
    (t = 1, noise from a generator seeded 0 per batch: deterministic, batches are chunk-aligned)."""
    from policylens.tap import bridge_features, capture, suffix_spans

    taps = [f"llm.layers.{bridge.raw_layer}.out", f"expert.layers.{bridge.query_layer}.out"]

    def run(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image = model.token_layout(batch)["prefix"]["image"]  # (B, P)
        with torch.no_grad(), capture(model, taps, stop_early=True) as cap:
            model.sample_actions(batch, generator=torch.Generator().manual_seed(0), steps=1)
        query = cap.calls(taps[1])[0]  # (B, 1 + H, D_expert)
        action = suffix_spans(query.shape[0], 1, query.shape[1] - 1)["action"]
        return {"target_features": bridge_features(cap.calls(taps[0])[0], image, query, action)}

    return run, taps


def build_cache(
    policy: str,
    dataset: str,
    out: str,
    kind: str = "hidden_feature",
    layers: Sequence[int] = (-2,),
    pooling: str = "mean_image_tokens",
    dtype: str = "float16",
    batch_size: int = 8,
    store_inputs: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    """Load ``policy`` (seeded, so built-in random-init policies are reproducible), build the store."""
    from policylens.models import load_model

    torch.manual_seed(0)
    model = load_model(policy).eval()
    source = synthetic_source(model, dataset)
    bridge = None
    if kind == "bridge":  # a hidden_feature store of [C_R ; C_AQ]
        bridge = BridgeSpec.for_layers(model.config.layers)
        extractor, taps = bridge_extractor(model, bridge)
        kind, layers, pooling = "hidden_feature", [bridge.raw_layer, bridge.query_layer], "bridge"
    else:
        extractor, taps = policy_extractor(model, kind, layers, pooling, dtype)
    meta = StoreMeta(
        bridge=bridge,
        kind=kind,
        model_id=policy,
        weights_hash=hash_state_dict(model),
        dataset_id=dataset,
        taps=taps,
        layers=list(layers) if kind != "token_level" else [],
        pooling=pooling,
        dtype=dtype,
    )
    return build_store(
        out, source, extractor, meta, batch_size=batch_size, store_inputs=store_inputs, progress=progress
    )


@app.command()
def build(
    policy: str = typer.Option("tiny_vla", help="Built-in policy name or checkpoint directory."),
    dataset: str = typer.Option("synthetic:64", help="Dataset spec: synthetic:N."),
    kind: str = typer.Option("hidden_feature", help="hidden_feature | hidden_state | token_level | bridge (CRaFT)."),
    layer: Annotated[list[int] | None, typer.Option(help="LLM layer index (default -2); repeatable.")] = None,
    pooling: str = typer.Option("mean_image_tokens", help="mean_image_tokens | masked_mean | first | last | none."),
    dtype: str = typer.Option("float16", help="float16 | bfloat16 | float32."),
    batch_size: int = typer.Option(8, min=1, help="Samples per forward."),
    store_input: Annotated[list[str] | None, typer.Option(help="Input to store too (input_ids); repeatable.")] = None,
    out: str = typer.Option(..., help="Store directory (rerun the same command to resume)."),
) -> None:
    """Run POLICY over DATASET and write (or resume) a feature store; torchrun ranks split the work."""
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
