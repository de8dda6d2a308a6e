"""CRaFT bridge features, for the cache (teacher, no gradients) and for the student (same code,
autograd graph kept), driven by a :class:`BridgeSpec` — or by a store's manifest, so a
student's features are computed exactly as the cache's were.

C_R pools ``llm.layers.{raw_layer}.out`` over ``raw_positions`` of the prefix; C_AQ pools
``expert.layers.{query_layer}.out`` over ``query_positions`` of the suffix at each of the
spec's ``flow_steps`` (the expert runs once per step: capture keeps one record per call and
stops after the last step needed); with ``action``, the action head's output
(``action_out.out``) at those steps follows. ``pooling="none"`` keeps every token at the
positions, flattened. The flow starts from the noise of ``noise_seed`` (per dataset sample for
new stores).

Importing this module registers the recipe ``bridge`` with the store: its ``student``
function (:func:`student_extractor`) and ``source`` (:func:`source_of`), which code that reads
a bridge cache gets from the store without importing this job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from ..store import StoreError, register_recipe
from ..tap import capture, pool, resolve_taps, tap_name
from ._bridge_spec import BRIDGE, BridgeSpec, bridge_spec_of
from ._sources import source_of

__all__ = ["ACTION_TAP", "bridge_extractor", "bridge_noise", "bridge_taps", "shift_left", "student_extractor"]

ACTION_TAP = tap_name("action_out", None)  # the action head's output, one record per flow step


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


def bridge_taps(bridge: BridgeSpec) -> list[str]:
    """The taps ``bridge`` reads: the raw and query layers (unless ``hidden=False``), then the
    action head (``action``)."""
    taps = [tap_name("llm", bridge.raw_layer, "out"), tap_name("expert", bridge.query_layer, "out")]
    taps = taps if bridge.hidden else []
    return [*taps, ACTION_TAP] if bridge.action else taps


def _tokens(hidden: Tensor, mask: Tensor, pooling: str, what: str) -> Tensor:
    """``hidden (B, T, D)`` at ``mask (B, T)``: pooled to ``(B, D)``, or (``none``) every masked
    token flattened to ``(B, n * D)``, which needs the same ``n`` in every sample."""
    if pooling != "none":
        return pool(hidden, mask, pooling)
    mask = mask.to(hidden.device)
    counts = mask.sum(1)
    if len(counts) and (counts != counts[0]).any():
        raise ValueError(
            f"bridge pooling='none' needs the same number of {what} tokens in every sample; this batch has "
            f"{counts.tolist()}. Use a pooled mode (masked_mean, first, last)."
        )
    return hidden[mask].reshape(hidden.shape[0], -1)  # (B, n * D), tokens in position order


def _flow_step_count(model: nn.Module) -> int | None:
    steps = getattr(getattr(model, "config", None), "flow_steps", None)
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def bridge_extractor(
    model: nn.Module, bridge: BridgeSpec, *, grad: bool = False
) -> tuple[Callable[..., dict[str, Tensor]], list[str]]:
    """CRaFT bridge features ``target_features (B, F)`` in float32 (the store casts):
    ``[C_R ; C_AQ at each flow step ; action output at each flow step (action)]``. ``run(batch,
    indices=None)``; ``indices``: the samples' dataset indices (per-sample noise). ``grad=True``:
    the student's features, attached to the autograd graph (the model's ``sample_actions`` must
    accept ``grad``). Legacy specs (``noise_per_sample`` False) draw the batch's noise from one
    generator seeded ``noise_seed``. Step 0 alone runs one flow step (its time, t = 1, is the same
    in any schedule); later steps run the model's own ``config.flow_steps``."""
    taps = bridge_taps(bridge)
    model_steps = _flow_step_count(model)
    steps = bridge.steps_of(model_steps)
    calls = steps[-1] + 1  # the expert's (and the action head's) calls the features need
    if bridge.action:
        try:
            resolve_taps(model, [ACTION_TAP])
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise StoreError(
                f"BridgeSpec.action=True reads the action head's output ({ACTION_TAP!r}), which "
                f"{type(model).__name__} has no tap for ({exc}); use action=False."
            ) from exc
    # stop after the last step needed (the prefix layer fires once): nothing past the bridge's taps runs
    stop = dict.fromkeys(taps[1:] if bridge.hidden else taps, calls)

    def run(batch: dict[str, Tensor], indices: Tensor | None = None) -> dict[str, Tensor]:
        layout = model.token_layout(batch)
        raw_mask = _positions(layout["prefix"]["image"], bridge.raw_positions)  # (B, P)
        b = raw_mask.shape[0]
        noise = bridge_noise(model, b, bridge, indices)
        generator = None if noise is not None else torch.Generator().manual_seed(bridge.noise_seed)
        kwargs: dict[str, Any] = {"generator": generator, "steps": 1 if calls == 1 else model_steps}
        if noise is not None:
            kwargs["noise"] = noise
        if grad:
            kwargs["grad"] = True
        with torch.set_grad_enabled(grad), capture(model, taps, stop_early=stop, keep_graph=grad) as cap:
            model.sample_actions(batch, **kwargs)
        counted = taps[1] if bridge.hidden else ACTION_TAP
        fired = cap.calls(counted)  # one record per flow step
        if len(fired) < calls:
            raise StoreError(f"{counted} fired {len(fired)} times; BridgeSpec.flow_steps={steps} needs {calls}")
        feats = []
        if bridge.hidden:
            raw, queries = cap.calls(taps[0])[0], fired  # queries: the suffix at each flow step
            action = layout["suffix"]["action"][:, -queries[0].shape[1] :]  # (B, S)
            query_mask = _positions(action, bridge.query_positions).bool()
            feats = [_tokens(raw.float(), raw_mask.bool(), bridge.pooling, "raw_positions")]  # C_R, in float32
            feats += [_tokens(queries[k].float(), query_mask, bridge.pooling, "query_positions") for k in steps]
        if bridge.action:  # the predicted velocity (B, H, action_dim) at each step, flattened
            feats += [cap.calls(ACTION_TAP)[k].float().flatten(1) for k in steps]
        return {"target_features": torch.cat(feats, -1)}

    run.takes_indices = True  # type: ignore[attr-defined]
    return run, taps


def student_extractor(
    model: nn.Module, manifest: Mapping[str, Any], where: str = "store", only: str | None = None
) -> Callable[..., dict[str, Tensor]]:
    """The student's bridge features (graph kept) computed as the cache at ``where`` computed the
    teacher's: taps, layers, positions, pooling, flow steps, action and noise from its manifest.
    The manifest's taps must be the ones its spec implies and exist in ``model``; the feature
    width must match the store's (checked on the first call).

    ``only="action"``: the action output alone (a cache built with ``action``): the student runs
    only up to the action head's last needed call, and the returned function's ``columns`` is the
    slice of the stored features it matches (action distillation: the teacher's velocities as
    targets). Without ``only``, ``columns`` is every column."""
    bridge = bridge_spec_of(manifest, where)
    if not bridge.noise_per_sample:
        raise StoreError(
            f"{where} was built with one noise generator per batch, so its features depend on how samples were "
            "batched and a student cannot reproduce them; rebuild it with this version "
            "(`policylens cache build --kind bridge ...` into a new --out)."
        )
    if only not in (None, "action"):
        raise ValueError(f"student_extractor: only={only!r}; use None (every feature) or 'action'")
    if only == "action" and not bridge.action:
        raise StoreError(
            f"{where} holds no action output (built without --bridge-action); action distillation needs a cache "
            "built with `policylens cache build --kind bridge --bridge-action`."
        )
    recorded, implied = list(manifest["meta"].get("taps", [])), bridge_taps(bridge)
    if recorded != implied:
        raise StoreError(
            f"{where}: manifest taps {recorded} are not its bridge spec's {implied}; the manifest is damaged"
        )
    stored = int(manifest["fields"]["target_features"]["shape"][0])
    columns = slice(0, stored)
    if only == "action" and bridge.hidden:
        steps = bridge.steps_of(_flow_step_count(model))
        action_width = len(steps) * math.prod(model.noise_shape)  # (H * action_dim) per step, at the end
        bridge = replace(bridge, hidden=False)
        columns = slice(stored - action_width, stored)
    run, taps = bridge_extractor(model, bridge, grad=True)
    try:
        resolve_taps(model, taps)
    except (KeyError, ValueError, IndexError) as exc:
        raise StoreError(f"{where} taps {taps}, which this model does not have: {exc}") from exc
    width = [columns.stop - columns.start]

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
    checked.columns = columns  # type: ignore[attr-defined]
    return checked


register_recipe(BRIDGE, kind="hidden_feature", module="policylens.anchors", student=student_extractor, source=source_of)
