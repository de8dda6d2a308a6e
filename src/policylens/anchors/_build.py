"""``build_cache``: load a policy, open a dataset source, write an anchor-cache store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..store import BridgeSpec, StoreError, StoreMeta, build_store, hash_state_dict
from ._bridge import bridge_extractor
from ._extractors import policy_extractor
from ._sources import open_source

__all__ = ["build_cache"]

POLICY_KINDS = ("hidden_feature", "hidden_state", "token_level", "bridge")  # what a policy's taps give


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
    camera_map: Mapping[str, str] | str | None = None,
) -> dict:
    """Load ``policy`` (seeded, so built-in random-init policies are reproducible), build the store.

    ``policy``: a built-in name or checkpoint directory (LeRobot pi0 / pi0.5 / SmolVLA ones too,
    read through their saved pre-processor). ``camera_map``: dataset camera -> policy camera
    (``{"side": "varied_camera_1"}`` or ``"side=varied_camera_1"``), recorded in the manifest.
    """
    from policylens.models import load_model
    from policylens.tap import resolve_taps

    if kind not in POLICY_KINDS:
        hint = " (`patch_grid` / `point_cloud` stores come from `policylens align extract` / `align ingest`)"
        raise StoreError(f"kind={kind!r}; `cache build` writes one of {list(POLICY_KINDS)}{hint}.")
    torch.manual_seed(0)
    model = load_model(policy).eval()
    source = open_source(model, dataset, camera_map=camera_map)
    bridge = None
    if kind == "bridge":  # a hidden_feature store of [C_R ; C_AQ]
        bridge = BridgeSpec.for_layers(model.config.layers)
        extractor, taps = bridge_extractor(model, bridge)
        kind, layers, pooling = "hidden_feature", [bridge.raw_layer, bridge.query_layer], "bridge"
    else:
        extractor, taps = policy_extractor(model, kind, layers, pooling, dtype)
    resolve_taps(model, taps)  # a bad layer fails here, before the store directory exists
    cameras = getattr(source, "camera_map", None)
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
        extra={"camera_map": dict(cameras)} if cameras else {},
    )
    return build_store(
        out, source, extractor, meta, batch_size=batch_size, store_inputs=store_inputs, progress=progress
    )
