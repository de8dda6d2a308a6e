"""The CRaFT bridge recipe (:class:`BridgeSpec`): which layers, positions, pooling, flow steps and
flow noise make a bridge cache's features, and whether the action output joins them. It is this
job's concept: a store keeps it as the opaque settings of the registered recipe ``bridge``
(``meta["bridge"]`` in the manifest), and :func:`bridge_spec_of` reads it back. Pooling uses the
tap core's names (``POOLINGS``); manifests written before that say ``mean`` and read as
``masked_mean``. Settings added later (``flow_steps``, ``action``, ``hidden``) are recorded only when they
differ from their defaults (``hidden=False``: the action output alone), so a manifest without
them reads as before and a default cache's manifest is the one earlier versions wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from typing import Any

from ..store import StoreError, recipe_settings
from ..tap import POOLINGS

__all__ = [
    "ALL_FLOW_STEPS",
    "BRIDGE",
    "BRIDGE_POOLINGS",
    "BRIDGE_POOLING_CHOICES",
    "BRIDGE_POSITIONS",
    "BridgeSpec",
    "bridge_spec_of",
]

BRIDGE = "bridge"  # the recipe's name: its settings sit under meta["bridge"], and meta.pooling says "bridge"
BRIDGE_POSITIONS = {"raw_positions": ("image", "vla_adapter"), "query_positions": ("action", "vla_adapter")}
# tap's poolings that pool over the recipe's positions (mean_image_tokens would take the whole image span)
BRIDGE_POOLINGS = tuple(p for p in POOLINGS if p in ("masked_mean", "first", "last"))
# ... and "none": every token at those positions, flattened (the same count in every sample)
BRIDGE_POOLING_CHOICES = (*BRIDGE_POOLINGS, "none")
LEGACY_POOLINGS = {"mean": "masked_mean"}  # the recipe's own word before it used tap's
ALL_FLOW_STEPS = "all"  # flow_steps: every step of the model's own schedule
ADDED_DEFAULTS = {"flow_steps": (0,), "action": False, "hidden": True}  # fields a manifest leaves out at their default


@dataclass
class BridgeSpec:
    """CRaFT bridge features: C_R (``raw_layer`` at ``raw_positions``) ++ C_AQ (``query_layer``
    at ``query_positions``, at each of ``flow_steps``) ++ the action output at each of
    ``flow_steps`` (``action``), concatenated into one vector per sample.

    Positions: ``image`` / ``action`` are the layout's image and action-query spans;
    ``vla_adapter`` is VLA-Adapter's convention, each span one position to the left (the
    slot before the first patch plus patches 0..P-2; the last prompt token plus queries
    0..Q-2). ``pooling``: ``masked_mean``, ``first`` or ``last`` (tap's names) over those
    positions — ``[D_llm + S * D_expert]`` — or ``none``: every token at them, flattened
    (``[P * D_llm + S * Q * D_expert]``; the count must be the same in every sample).
    ``flow_steps``: the flow-step indices (increasing, from 0) whose expert layer is kept, or
    ``"all"`` (every step of the model's own schedule, ``config.flow_steps``); more than step 0
    runs the model's own number of steps, so later steps see its time grid. ``action``: append
    the action head's output (``action_out.out``: the predicted velocity at the anchored noise
    and time, flattened ``H * action_dim``) at each listed step. ``hidden=False`` (with ``action``)
    drops C_R and C_AQ: the features are the action output alone (action distillation's targets).
    ``noise_seed``: the flow noise of dataset sample ``i`` is drawn from a generator seeded
    ``noise_seed + i`` (``noise_per_sample``), so any batch of the same samples gets the same
    features; stores made before that drew one generator seeded ``noise_seed`` per batch
    (``noise_per_sample=False``). ``raw_layer`` defaults to ``n_layers // 2`` (:meth:`for_layers`).
    """

    raw_layer: int
    query_layer: int = -1
    raw_positions: str = "image"
    query_positions: str = "action"
    pooling: str = "masked_mean"
    noise_seed: int = 0
    noise_per_sample: bool = False
    flow_steps: tuple[int, ...] | str = (0,)
    action: bool = False
    hidden: bool = True

    def __post_init__(self) -> None:
        for name, allowed in BRIDGE_POSITIONS.items():
            if getattr(self, name) not in allowed:
                raise StoreError(f"BridgeSpec.{name}={getattr(self, name)!r}; expected one of {list(allowed)}.")
        if self.pooling not in BRIDGE_POOLING_CHOICES:
            old = f" (the old word for {LEGACY_POOLINGS[self.pooling]!r})" if self.pooling in LEGACY_POOLINGS else ""
            raise StoreError(
                f"BridgeSpec.pooling={self.pooling!r}{old}; expected one of {list(BRIDGE_POOLING_CHOICES)} "
                "(tap's POOLINGS; none keeps every token)."
            )
        self.flow_steps = _flow_steps(self.flow_steps)
        if not isinstance(self.action, bool):
            raise StoreError(f"BridgeSpec.action={self.action!r}; expected true or false.")
        if not isinstance(self.hidden, bool):
            raise StoreError(f"BridgeSpec.hidden={self.hidden!r}; expected true or false.")
        if not (self.hidden or self.action):
            raise StoreError(
                "BridgeSpec.hidden=False leaves no features unless action=True (the action output alone); "
                "set action=True or hidden=True."
            )

    def steps_of(self, model_steps: int | None) -> tuple[int, ...]:
        """The flow-step indices for a model whose schedule has ``model_steps`` steps (None: it
        does not say); ``"all"`` and any step past 0 need that number, and each step must be in it."""
        if self.flow_steps == (0,):
            return (0,)
        if model_steps is None:
            raise StoreError(
                f"BridgeSpec.flow_steps={self.flow_steps!r}: this model does not say its number of flow steps "
                "(config.flow_steps); use flow_steps=(0,)."
            )
        if self.flow_steps == ALL_FLOW_STEPS:
            return tuple(range(model_steps))
        if self.flow_steps[-1] >= model_steps:
            raise StoreError(
                f"BridgeSpec.flow_steps={list(self.flow_steps)}: the model runs {model_steps} flow steps "
                f"(indices 0..{model_steps - 1}); drop the later ones or use 'all'."
            )
        return self.flow_steps

    @classmethod
    def for_layers(cls, n_layers: int, **kwargs: Any) -> BridgeSpec:
        if n_layers < 1:
            raise StoreError(f"BridgeSpec.for_layers: n_layers={n_layers}; expected >= 1.")
        kwargs.setdefault("noise_per_sample", True)
        return cls(raw_layer=n_layers // 2, query_layer=n_layers - 1, **kwargs)

    def to_json(self) -> dict[str, Any]:
        """The settings a manifest records (``StoreMeta(recipe={"bridge": spec.to_json()})``)."""
        out = asdict(self)
        for name, default in ADDED_DEFAULTS.items():
            if out[name] == default:
                del out[name]  # a manifest without it reads as the default: the one earlier versions wrote
        if isinstance(out.get("flow_steps"), tuple):
            out["flow_steps"] = list(out["flow_steps"])
        return out

    @classmethod
    def from_json(cls, settings: Mapping[str, Any], where: str = "store") -> BridgeSpec:
        """A spec from recorded settings; the pre-``POOLINGS`` word ``mean`` reads as ``masked_mean``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown or "raw_layer" not in settings:
            raise StoreError(
                f"{where}: meta.{BRIDGE} has keys {sorted(settings)}; expected raw_layer and any of {sorted(known)}. "
                "The manifest is damaged: rebuild the cache (`policylens cache build --kind bridge`)."
            )
        out = dict(settings)
        pooling = out.get("pooling", "masked_mean")
        out["pooling"] = LEGACY_POOLINGS.get(pooling, pooling)
        return cls(**out)


def bridge_spec_of(manifest: Mapping[str, Any], where: str = "store") -> BridgeSpec:
    """The :class:`BridgeSpec` a bridge cache's manifest records; a store of another kind is an error."""
    meta = manifest.get("meta", {})
    settings = recipe_settings(manifest, BRIDGE)
    if settings is None or meta.get("pooling") != BRIDGE:
        raise StoreError(
            f"{where} is not a bridge cache (kind={manifest.get('kind')!r}, pooling={meta.get('pooling')!r}); "
            "build one with `policylens cache build --kind bridge`."
        )
    return BridgeSpec.from_json(settings, where)


def _flow_steps(value: Any) -> tuple[int, ...] | str:
    """``flow_steps`` as the spec keeps it: ``"all"`` or a tuple of increasing indices from 0."""
    if value == ALL_FLOW_STEPS:
        return ALL_FLOW_STEPS
    steps = tuple(value) if isinstance(value, (list, tuple)) else None
    ok = steps and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps)
    if not ok or any(a >= b for a, b in pairwise(steps)):
        raise StoreError(
            f"BridgeSpec.flow_steps={value!r}; expected increasing flow-step indices from 0, e.g. (0, 4, 9), "
            f"or {ALL_FLOW_STEPS!r}."
        )
    return steps
