"""``build_cache``: load a policy, open a dataset source, write an anchor-cache store.

Everything that can be checked without the policy is checked before it loads (kind, pooling,
dtype, batch size, the bridge options, the dataset spec and its files, the camera map's form,
the settings of a store already at ``out``); layers and the bridge's flow steps are resolved on
the loaded policy before the store exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import parse_camera_map
from ..runs import weights_hash
from ..store import STORE_DTYPES, StoreError, StoreMeta, build_store, read_manifest, recipe_settings
from ._bridge import bridge_extractor
from ._bridge_spec import BRIDGE, BridgeSpec
from ._extractors import policy_extractor
from ._sources import check_camera_map_applies, open_source, parse_dataset

__all__ = ["BRIDGE_OPTIONS", "POLICY_KINDS", "build_cache"]

POLICY_KINDS = ("hidden_feature", "hidden_state", "token_level", "bridge")  # what a policy's taps give
# the BridgeSpec settings build_cache(bridge=...) takes; the layers follow the policy's depth
BRIDGE_OPTIONS = ("flow_steps", "pooling", "action", "hidden", "raw_positions", "query_positions", "noise_seed")


def _check_options(kind: str, pooling: str, dtype: str, batch_size: int) -> None:
    from policylens.tap import POOLINGS

    if kind not in POLICY_KINDS:
        hint = " (`patch_grid` / `point_cloud` stores come from `policylens align extract` / `align ingest`)"
        raise StoreError(f"kind={kind!r}; `cache build` writes one of {list(POLICY_KINDS)}{hint}.")
    if kind != BRIDGE and pooling not in POOLINGS:
        raise StoreError(f"pooling={pooling!r}; expected one of {list(POOLINGS)}.")
    if dtype not in STORE_DTYPES:
        raise StoreError(f"dtype={dtype!r}; the store keeps features in one of {list(STORE_DTYPES)}.")
    if batch_size < 1:
        raise StoreError(f"batch_size={batch_size}; expected >= 1.")


def _bridge_options(kind: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``build_cache(bridge=...)`` checked before the policy loads: known names, valid values."""
    if not options:
        return {}
    if kind != BRIDGE:
        raise StoreError(f"bridge={dict(options)!r}: bridge options apply to kind='bridge' only (got kind={kind!r}).")
    unknown = sorted(set(options) - set(BRIDGE_OPTIONS))
    if unknown:
        raise StoreError(
            f"bridge options {unknown} are not BridgeSpec settings; expected any of {list(BRIDGE_OPTIONS)}."
        )
    BridgeSpec(raw_layer=0, **options)  # each value checked, the field named
    return dict(options)


def _check_existing_bridge(out: str, options: Mapping[str, Any]) -> None:
    """Refuse, before the policy loads, to resume a bridge store at ``out`` built with other options."""
    if not (Path(out) / "manifest.json").is_file():
        return
    recorded = recipe_settings(read_manifest(out), BRIDGE)
    if recorded is None:
        return  # another kind: _check_existing says so
    have = BridgeSpec.from_json(recorded, f"store {out!r}")
    want = BridgeSpec.for_layers(1, **options)
    diff = [
        f"{k} {getattr(have, k)!r} vs {getattr(want, k)!r}"
        for k in BRIDGE_OPTIONS
        if getattr(have, k) != getattr(want, k)
    ]
    if diff:
        raise StoreError(
            f"store {out!r} exists but was built with other bridge settings ({'; '.join(diff)}). "
            "Use a new --out path, or delete the store to rebuild it."
        )


def _bridge_settings(out: str, bridge: BridgeSpec) -> dict:
    """The settings to record for ``bridge``: an existing store's own, when they say the same thing
    in older words (``pooling: mean``), so that resuming a store built before keeps its manifest."""
    if (Path(out) / "manifest.json").is_file():
        recorded = recipe_settings(read_manifest(out), BRIDGE)
        if recorded is not None and BridgeSpec.from_json(recorded, f"store {out!r}") == bridge:
            return recorded
    return bridge.to_json()


def _check_existing(out: str, **want: object) -> None:
    """Refuse, before the policy loads, to resume a store at ``out`` made with other settings
    (``want``: manifest ``meta`` keys; the full check, weights hash included, runs in ``build_store``)."""
    if not (Path(out) / "manifest.json").is_file():
        return
    meta = read_manifest(out)["meta"]
    problems = [f"meta.{k} {meta.get(k)!r} vs {v!r}" for k, v in want.items() if meta.get(k) != v]
    if problems:
        raise StoreError(
            f"store {out!r} exists but was built with different settings ({'; '.join(problems)}). "
            "Use a new --out path, or delete the store to rebuild it."
        )


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
    bridge: Mapping[str, Any] | None = None,
) -> dict:
    """Load ``policy`` (seeded, so built-in random-init policies are reproducible), build the store.

    ``policy``: a built-in name or checkpoint directory (LeRobot pi0 / pi0.5 / SmolVLA ones too,
    read through their saved pre-processor). ``dataset``: ``synthetic:N | droid:PATH |
    lerobot:PATH | PATH``. ``camera_map``: dataset camera -> policy camera
    (``{"side": "varied_camera_1"}`` or ``"side=varied_camera_1"``), recorded in the manifest.
    ``bridge``: :class:`BridgeSpec` settings for ``kind="bridge"`` (``BRIDGE_OPTIONS``), e.g.
    ``{"flow_steps": (0, 4, 9), "pooling": "none", "action": True}``; the layers follow the policy.
    Ctrl-C / SIGTERM stop it keeping every computed sample (``store.BuildInterrupted``).
    """
    from policylens.models import load_model
    from policylens.tap import resolve_taps

    _check_options(kind, pooling, dtype, batch_size)
    options = _bridge_options(kind, bridge)
    cameras = parse_camera_map(camera_map) if isinstance(camera_map, str) else camera_map
    spec = parse_dataset(dataset)
    check_camera_map_applies(spec, cameras)
    stored = {"kind": "hidden_feature", "pooling": BRIDGE} if kind == BRIDGE else {"kind": kind, "pooling": pooling}
    if kind in ("hidden_feature", "hidden_state"):
        stored["layers"] = list(layers)
    _check_existing(out, model_id=policy, dataset_id=spec.id, dtype=dtype, **stored)
    if kind == BRIDGE:
        _check_existing_bridge(out, options)
    torch.manual_seed(0)
    model = load_model(policy).eval()
    source = open_source(model, spec, camera_map=cameras)
    recipe = {}
    if kind == BRIDGE:  # a hidden_feature store of [C_R ; C_AQ]
        bridge_spec = BridgeSpec.for_layers(model.config.layers, **options)
        extractor, taps = bridge_extractor(model, bridge_spec)  # flow steps the model lacks fail here
        kind, layers, pooling = "hidden_feature", [bridge_spec.raw_layer, bridge_spec.query_layer], BRIDGE
        recipe = {BRIDGE: _bridge_settings(out, bridge_spec)}
    else:
        extractor, taps = policy_extractor(model, kind, layers, pooling, dtype)
    resolve_taps(model, taps)  # a bad layer fails here, before the store directory exists
    source_cameras = getattr(source, "camera_map", None)
    meta = StoreMeta(
        recipe=recipe,
        kind=kind,
        model_id=policy,
        weights_hash=weights_hash(model),
        dataset_id=spec.id,
        taps=taps,
        layers=list(layers) if kind != "token_level" else [],
        pooling=pooling,
        dtype=dtype,
        extra={"camera_map": dict(source_cameras)} if source_cameras else {},
    )
    return build_store(
        out, source, extractor, meta, batch_size=batch_size, store_inputs=store_inputs, progress=progress
    )
