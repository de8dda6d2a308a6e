"""anchors: teacher anchor caches — run a frozen policy over a dataset, tap, pool, store."""

from ._bridge import bridge_extractor, bridge_noise, bridge_spec_of, shift_left, student_extractor
from ._build import build_cache
from ._extractors import policy_extractor
from ._sources import EpisodeSource, SyntheticSource, open_source, parse_camera_map

__all__ = [
    "EpisodeSource",
    "SyntheticSource",
    "bridge_extractor",
    "bridge_noise",
    "bridge_spec_of",
    "build_cache",
    "open_source",
    "parse_camera_map",
    "policy_extractor",
    "shift_left",
    "student_extractor",
]
