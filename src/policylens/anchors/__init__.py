"""anchors: teacher anchor caches — run a frozen policy over a dataset, tap, pool, store."""

from ._bridge import bridge_extractor, bridge_noise, bridge_spec_of, shift_left, student_extractor
from ._build import POLICY_KINDS, build_cache
from ._extractors import policy_extractor
from ._sources import (
    DATASET_FORMS,
    DATASET_HELP,
    DatasetSpec,
    EpisodeSource,
    SyntheticSource,
    open_source,
    parse_camera_map,
    parse_dataset,
)

__all__ = [
    "DATASET_FORMS",
    "DATASET_HELP",
    "POLICY_KINDS",
    "DatasetSpec",
    "EpisodeSource",
    "SyntheticSource",
    "bridge_extractor",
    "bridge_noise",
    "bridge_spec_of",
    "build_cache",
    "open_source",
    "parse_camera_map",
    "parse_dataset",
    "policy_extractor",
    "shift_left",
    "student_extractor",
]
