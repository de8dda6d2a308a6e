"""anchors: teacher anchor caches — run a frozen policy over a dataset, tap, pool, store.

Importing it registers the CRaFT recipe ``bridge`` (:class:`BridgeSpec`) with the store."""

from ._bridge import ACTION_TAP, bridge_extractor, bridge_noise, bridge_taps, shift_left, student_extractor
from ._bridge_spec import (
    ALL_FLOW_STEPS,
    BRIDGE_POOLING_CHOICES,
    BRIDGE_POOLINGS,
    BRIDGE_POSITIONS,
    BridgeSpec,
    bridge_spec_of,
)
from ._build import BRIDGE_OPTIONS, POLICY_KINDS, build_cache
from ._extractors import policy_extractor
from ._sources import (
    DATASET_FORMS,
    DATASET_HELP,
    DatasetSpec,
    SyntheticSource,
    open_source,
    parse_dataset,
    source_of,
)

__all__ = [
    "ACTION_TAP",
    "ALL_FLOW_STEPS",
    "BRIDGE_OPTIONS",
    "BRIDGE_POOLINGS",
    "BRIDGE_POOLING_CHOICES",
    "BRIDGE_POSITIONS",
    "DATASET_FORMS",
    "DATASET_HELP",
    "POLICY_KINDS",
    "BridgeSpec",
    "DatasetSpec",
    "SyntheticSource",
    "bridge_extractor",
    "bridge_noise",
    "bridge_spec_of",
    "bridge_taps",
    "build_cache",
    "open_source",
    "parse_dataset",
    "policy_extractor",
    "shift_left",
    "source_of",
    "student_extractor",
]
