"""anchors: teacher anchor caches — run a frozen policy over a dataset, tap, pool, store."""

from ._build import build_cache
from ._extractors import bridge_extractor, policy_extractor
from ._sources import EpisodeSource, SyntheticSource, open_source, parse_camera_map

__all__ = [
    "EpisodeSource",
    "SyntheticSource",
    "bridge_extractor",
    "build_cache",
    "open_source",
    "parse_camera_map",
    "policy_extractor",
]
