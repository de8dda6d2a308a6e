"""The CRaFT bridge recipe (:class:`BridgeSpec`): which layers, positions, pooling and flow noise
make a bridge cache's features. It is this job's concept: a store keeps it as the opaque
settings of the registered recipe ``bridge`` (``meta["bridge"]`` in the manifest), and
:func:`bridge_spec_of` reads it back. Pooling uses the tap core's names (``POOLINGS``);
manifests written before that say ``mean`` and read as ``masked_mean``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..store import StoreError, recipe_settings
from ..tap import POOLINGS

__all__ = ["BRIDGE", "BRIDGE_POOLINGS", "BRIDGE_POSITIONS", "BridgeSpec", "bridge_spec_of"]

BRIDGE = "bridge"  # the recipe's name: its settings sit under meta["bridge"], and meta.pooling says "bridge"
BRIDGE_POSITIONS = {"raw_positions": ("image", "vla_adapter"), "query_positions": ("action", "vla_adapter")}
# tap's poolings that pool over the recipe's positions (mean_image_tokens would take the whole image span)
BRIDGE_POOLINGS = tuple(p for p in POOLINGS if p in ("masked_mean", "first", "last"))
LEGACY_POOLINGS = {"mean": "masked_mean"}  # the recipe's own word before it used tap's


@dataclass
class BridgeSpec:
    """CRaFT bridge features: C_R (``raw_layer`` at ``raw_positions``) ++ C_AQ (``query_layer``
    at ``query_positions``, at the first flow step), each pooled with ``pooling`` and
    concatenated into ``[D_llm + D_expert]``.

    Positions: ``image`` / ``action`` are the layout's image and action-query spans;
    ``vla_adapter`` is VLA-Adapter's convention, each span one position to the left (the
    slot before the first patch plus patches 0..P-2; the last prompt token plus queries
    0..Q-2). ``pooling``: ``masked_mean``, ``first`` or ``last`` (tap's names) over those positions.
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

    def __post_init__(self) -> None:
        for name, allowed in BRIDGE_POSITIONS.items():
            if getattr(self, name) not in allowed:
                raise StoreError(f"BridgeSpec.{name}={getattr(self, name)!r}; expected one of {list(allowed)}.")
        if self.pooling not in BRIDGE_POOLINGS:
            old = f" (the old word for {LEGACY_POOLINGS[self.pooling]!r})" if self.pooling in LEGACY_POOLINGS else ""
            raise StoreError(
                f"BridgeSpec.pooling={self.pooling!r}{old}; expected one of {list(BRIDGE_POOLINGS)} (tap's POOLINGS)."
            )

    @classmethod
    def for_layers(cls, n_layers: int, **kwargs: Any) -> BridgeSpec:
        if n_layers < 1:
            raise StoreError(f"BridgeSpec.for_layers: n_layers={n_layers}; expected >= 1.")
        kwargs.setdefault("noise_per_sample", True)
        return cls(raw_layer=n_layers // 2, query_layer=n_layers - 1, **kwargs)

    def to_json(self) -> dict[str, Any]:
        """The settings a manifest records (``StoreMeta(recipe={"bridge": spec.to_json()})``)."""
        return asdict(self)

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
