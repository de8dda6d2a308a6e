"""attention: where a VLA looks — attention maps of the prefix (text -> image) and suffix
(action -> image) phases per camera on each camera's patch grid, overlays and videos,
object-overlap metrics and statistics over episodes."""

from ._extract import PHASES, AttentionMaps, extract_attention

__all__ = ["PHASES", "AttentionMaps", "extract_attention"]
