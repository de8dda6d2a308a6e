"""CRaFT bridge features, for the cache (teacher, no gradients) and for the student (same code,
autograd graph kept), driven by a :class:`BridgeSpec` — or by a store's manifest, so a
student's features are computed exactly as the cache's were.

C_R pools ``llm.layers.{raw_layer}.out`` over ``raw_positions`` of the prefix; C_AQ pools
``expert.layers.{query_layer}.out`` over ``query_positions`` of the suffix at the first flow
step, from the noise of ``noise_seed`` (per dataset sample for new stores).

Importing this module registers the recipe ``bridge`` with the store: its ``student``
function (:func:`student_extractor`) and ``source`` (:func:`source_of`), which code that reads
a bridge cache gets from the store without importing this job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..store import StoreError, register_recipe
from ..tap import capture, pool, resolve_taps, tap_name
from ._bridge_spec import BRIDGE, BridgeSpec, bridge_spec_of
from ._sources import source_of

__all__ = ["bridge_extractor", "bridge_noise", "shift_left", "student_extractor"]


def shift_left(mask: Tensor) -> Tensor:
    """``mask (B, T)`` moved one position to the left: the token before each span's first one
    joins, its last one leaves (VLA-Adapter reads features one slot early). A span starting
    at position 0 has nothing to its left: an error."""
    if mask[:, 0].any():
        raise ValueError("shift_left: a span starts at position 0; there is no token to its left")
    return torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], 1)


def _positions(mask: Tensor, mode: str) -> Tensor:
    return shift_left(mask) if mode == "vla_adapter" else mask


def bridge_noise(model: nn.Module, batch_size: int, bridge: BridgeSpec, indices: Tensor | None) -> Tensor | None:
    """The flow noise of the bridge pass ``(B, *model.noise_shape)``: sample ``i``'s from a
    generator seeded ``noise_seed + i`` (per-sample specs), else None (the legacy per-batch
    generator; see :func:`bridge_extractor`)."""
    if not bridge.noise_per_sample:
        return None
    if indices is None:
        raise ValueError("bridge features with per-sample noise need the samples' dataset indices (indices=)")
    if len(indices) != batch_size:
        raise ValueError(f"bridge_noise: {len(indices)} indices for a batch of {batch_size}")
    shape = tuple(model.noise_shape)
    gens = [torch.Generator().manual_seed(bridge.noise_seed + int(i)) for i in indices]
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def bridge_extractor(
    model: nn.Module, bridge: BridgeSpec, *, grad: bool = False
) -> tuple[Callable[..., dict[str, Tensor]], list[str]]:
    """CRaFT bridge features ``target_features (B, D_llm + D_expert)`` in float32 (the store
    casts). ``run(batch, indices=None)``; ``indices``: the samples' dataset indices (per-sample
    noise). ``grad=True``: the student's features, attached to the autograd graph (the
    model's ``sample_actions`` must accept ``grad``). Legacy specs (``noise_per_sample``
    False) draw the batch's noise from one generator seeded ``noise_seed``."""
    taps = [tap_name("llm", bridge.raw_layer, "out"), tap_name("expert", bridge.query_layer, "out")]

    def run(batch: dict[str, Tensor], indices: Tensor | None = None) -> dict[str, Tensor]:
        layout = model.token_layout(batch)
        raw_mask = _positions(layout["prefix"]["image"], bridge.raw_positions)  # (B, P)
        b = raw_mask.shape[0]
        noise = bridge_noise(model, b, bridge, indices)
        generator = None if noise is not None else torch.Generator().manual_seed(bridge.noise_seed)
        kwargs: dict[str, Any] = {"generator": generator, "steps": 1}
        if noise is not None:
            kwargs["noise"] = noise
        if grad:
            kwargs["grad"] = True
        with torch.set_grad_enabled(grad), capture(model, taps, stop_early=True, keep_graph=grad) as cap:
            model.sample_actions(batch, **kwargs)
        raw, query = cap.calls(taps[0])[0], cap.calls(taps[1])[0]  # query: the suffix at the first flow step
        action = layout["suffix"]["action"][:, -query.shape[1] :]  # (B, S)
        query_mask = _positions(action, bridge.query_positions)
        feats = [pool(raw.float(), raw_mask.bool(), bridge.pooling)]  # (B, D_llm), in float32
        feats.append(pool(query.float(), query_mask.bool(), bridge.pooling))  # (B, D_expert)
        return {"target_features": torch.cat(feats, -1)}

    run.takes_indices = True  # type: ignore[attr-defined]
    return run, taps


def student_extractor(
    model: nn.Module, manifest: Mapping[str, Any], where: str = "store"
) -> Callable[..., dict[str, Tensor]]:
    """The student's bridge features (graph kept) computed as the cache at ``where`` computed the
    teacher's: taps, layers, positions, pooling and noise from its manifest. The manifest's
    taps must be the ones its spec implies and exist in ``model``; the feature width must
    match the store's (checked on the first call)."""
    bridge = bridge_spec_of(manifest, where)
    if not bridge.noise_per_sample:
        raise StoreError(
            f"{where} was built with one noise generator per batch, so its features depend on how samples were "
            "batched and a student cannot reproduce them; rebuild it with this version "
            "(`policylens cache build --kind bridge ...` into a new --out)."
        )
    run, taps = bridge_extractor(model, bridge, grad=True)
    recorded = list(manifest["meta"].get("taps", []))
    if recorded != taps:
        raise StoreError(f"{where}: manifest taps {recorded} are not its bridge spec's {taps}; the manifest is damaged")
    try:
        resolve_taps(model, taps)
    except (KeyError, ValueError, IndexError) as exc:
        raise StoreError(f"{where} taps {taps}, which this model does not have: {exc}") from exc
    width = list(manifest["fields"]["target_features"]["shape"])

    def checked(batch: dict[str, Tensor], indices: Tensor | None = None) -> dict[str, Tensor]:
        out = run(batch, indices=indices)
        got = list(out["target_features"].shape[1:])
        if got != width:
            raise StoreError(
                f"{where} holds bridge features of shape {width}, but this model gives {got} at {taps}; "
                "the student must have the teacher's widths (or build a cache from a matching teacher)."
            )
        return out

    checked.takes_indices = True  # type: ignore[attr-defined]
    return checked


register_recipe(BRIDGE, kind="hidden_feature", module="policylens.anchors", student=student_extractor, source=source_of)
