"""Attention maps of a VLA's two phases, per camera, on each camera's patch grid.

- **prefix**: the instruction (text) tokens' attention over the prefix, in the decoder layer
  ``llm.layers.{l}``: one forward, queries = text tokens.
- **suffix**: the action tokens' attention over the prefix, in the expert layer
  ``expert.layers.{l}``: one map per flow / denoising step, then aggregated (``mean`` over
  steps, ``last``, or one step by index).

Both phases come from one ``sample_actions`` call; only the needed block leaves the model:
the capture keeps each tap's query rows (the union over the batch), in float16. Each query row is renormalised over
nothing: the numbers are the model's probabilities. A map is the mean over the phase's valid
query tokens of each sample, per head, over camera ``k``'s image tokens, laid on its patch grid.
Mass that does not land on any camera's image tokens is reported as numbers (``mass``:
``text``, ``state``, ``first`` — the first prefix token, a common attention sink — ``pad``,
``suffix``), never drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..tap import TokenSpans, capture, get_adapter, tap_name

__all__ = ["PHASES", "AttentionMaps", "extract_attention"]

PHASES = {"prefix": ("llm", "text"), "suffix": ("expert", "action")}
STEP_MODES = ("mean", "last")


@dataclass
class AttentionMaps:
    """One phase of one layer for a batch: ``maps[camera]`` ``(B, heads, rows, cols)``,
    ``mass[name]`` ``(B, heads)`` (attention mass per key span), and for the suffix the
    per-step maps before aggregation (``steps[camera]``: ``(S, B, heads, rows, cols)``)."""

    phase: str
    layer: int
    maps: dict[str, Tensor]
    mass: dict[str, Tensor]
    steps: dict[str, Tensor] = field(default_factory=dict)


def _query_mean(probs: Tensor, queries: Tensor) -> Tensor:
    """``(S, B, H, Q, K)`` rows kept for the union of queries (S calls), per-sample ``queries``
    ``(B, Q)`` -> ``(S, B, H, K)`` mean over each sample's own query rows."""
    w = queries.to(probs.dtype)[None, :, None, :, None]  # (1, B, 1, Q, 1)
    return (probs * w).sum(3) / w.sum(3).clamp(min=1)


def _shared_positions(prefix: TokenSpans, cameras: Sequence[str]) -> dict[str, Tensor | None]:
    """Per camera, its image-token positions when every sample has them at the same place (the usual
    case), else None; worked out once per batch (one host sync per camera)."""
    out = {}
    for c in cameras:
        mask = prefix[f"image[{c}]"]
        out[c] = mask[0].nonzero().flatten() if bool((mask == mask[:1]).all()) else None
    return out


def _split(
    row: Tensor, prefix: TokenSpans, cameras: Sequence[str], shared: dict[str, Tensor | None] | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(S, B, H, K)`` attention over keys (prefix first, then any suffix), all S calls at once
    -> camera maps ``(S, B, H, rows, cols)`` and the mass ``(S, B, H)`` on every other span.
    ``shared``: :func:`_shared_positions` of the batch (worked out here when None)."""
    s, b, h = row.shape[:3]
    p = prefix.shape[1]
    shared = _shared_positions(prefix, cameras) if shared is None else shared
    maps = {}
    for c in cameras:
        idx, grid = shared[c], prefix.grids[c]
        if idx is not None:
            maps[c] = row[..., idx].reshape(s, b, h, grid.rows, grid.cols)
        else:
            flat = row[..., :p].permute(0, 1, 3, 2)  # (S, B, P, H)
            maps[c] = torch.stack(
                [torch.stack([prefix.image_grid(c, flat[k, :, :, j]) for j in range(h)], 1) for k in range(s)]
            )
    first = torch.zeros_like(prefix["valid"])
    first[:, 0] = True
    spans = {"image": prefix["image"], "text": prefix["text"], "first": first & ~prefix["image"], "pad": prefix["pad"]}
    if "state" in prefix:
        spans["state"] = prefix["state"]
    mass = {name: (row[..., :p] * m.to(row.dtype)[None, :, None, :]).sum(-1) for name, m in spans.items()}
    mass["suffix"] = row[..., p:].sum(-1)
    return maps, mass


@torch.no_grad()
def extract_attention(
    model: nn.Module,
    batch: dict[str, Tensor],
    layers: Sequence[int],
    phases: Sequence[str] = ("prefix", "suffix"),
    heads: Sequence[int] | None = None,
    step: str | int = "mean",
    seed: int = 0,
) -> dict[tuple[str, int], AttentionMaps]:
    """Prefix and suffix attention maps of ``layers`` from one ``model.sample_actions`` call.

    ``model``: a VLA with ``token_layout(batch)`` (patch grids in ``prefix.grids``) and
    ``sample_actions(batch, generator=...)``, or, for the prefix phase alone, any model whose
    adapter gives a prefix layout with grids (HF PaliGemma: text -> image in one ``model(**batch)``).
    ``heads`` keeps a subset; ``step`` aggregates the suffix's per-step maps (``"mean"``,
    ``"last"`` or a step index).
    """
    for phase in phases:
        if phase not in PHASES:
            raise ValueError(f"extract_attention: phase {phase!r} is not one of {sorted(PHASES)}")
    if not (step in STEP_MODES or isinstance(step, int)):
        raise ValueError(f"extract_attention: step={step!r}; expected one of {STEP_MODES} or a step index")
    sample = getattr(model, "sample_actions", None)
    if sample is None and set(phases) != {"prefix"}:
        raise ValueError(
            f"extract_attention: {type(model).__name__} has no sample_actions(), so it has no action phase; "
            "pass phases=['prefix']"
        )
    layout = model.token_layout(batch) if hasattr(model, "token_layout") else get_adapter(model).layout(model, batch)
    prefix = layout["prefix"]
    suffix = layout["suffix"] if "suffix" in layout.sequences else None
    cameras = [c for c in prefix.cameras if c in prefix.grids and bool(prefix[f"image[{c}]"].any())]
    if not cameras:
        raise ValueError("extract_attention: the layout has no camera with a patch grid (prefix.grids)")
    taps = {(ph, li): tap_name(PHASES[ph][0], li, "attn.probs") for ph in phases for li in layers}
    rows = {"prefix": prefix["text"], "suffix": suffix["action"] if suffix is not None else None}
    queries = {name: rows[ph].any(0) for (ph, _), name in taps.items()}  # (Q,) rows kept per tap
    prefix_only = set(phases) == {"prefix"}  # then the forward can stop after the prefix pass
    with capture(
        model, list(taps.values()), queries=queries, heads=heads, dtype="float16", stop_early=prefix_only
    ) as cap:
        if sample is None:
            model(**batch)
        else:
            sample(batch, generator=torch.Generator().manual_seed(seed))  # one forward, both phases
    out: dict[tuple[str, int], AttentionMaps] = {}
    shared = _shared_positions(prefix, cameras)
    for (phase, li), name in taps.items():
        calls = cap.stacked(name).float()  # (S, B, H, Q, K): every flow step at once
        steps, mass_steps = _split(_query_mean(calls, rows[phase][:, queries[name]]), prefix, cameras, shared)
        pick = (lambda t: t.mean(0)) if step == "mean" else (lambda t: t[-1] if step == "last" else t[step])
        out[(phase, li)] = AttentionMaps(
            phase,
            li,
            {c: pick(t) for c, t in steps.items()},
            {k: pick(t) for k, t in mass_steps.items()},
            steps if phase == "suffix" else {},
        )
    return out
