"""attention: where a VLA looks — attention maps of the prefix (text -> image) and suffix
(action -> image) phases per camera on each camera's patch grid, overlays and videos, the
resumable job over episodes, object-overlap metrics and statistics over episodes."""

from ._closed_loop import closed_loop_masked
from ._extract import PHASES, STEP_MODES, AttentionMaps, extract_attention
from ._faithfulness import (
    FILLS,
    DeletionCurve,
    FaithfulnessResult,
    apply_fill,
    deletion_curve,
    direction_cosine,
    faithfulness,
    mask_regions,
    scale_invariant_mse,
)
from ._overlap import mask_from_coco_rle, mask_from_png, otsu_threshold, overlap_metrics, random_blobs, resize_to
from ._pipeline import RUN_MODES, AttentionInterrupted, AttentionRunConfig, episode_dir, run_attention
from ._render import head_grid, layer_strip, most_active_head, normalize_map, overlay, save_image
from ._report import write_report
from ._stats import (
    BootstrapCI,
    PairedDiff,
    bootstrap_ci,
    episode_counts,
    holm,
    paired_bootstrap_diff,
    summary_table,
    wilson_interval,
)
from ._video import available_codecs, read_video_frames, write_video

__all__ = [
    "FILLS",
    "PHASES",
    "RUN_MODES",
    "STEP_MODES",
    "AttentionInterrupted",
    "AttentionMaps",
    "AttentionRunConfig",
    "BootstrapCI",
    "DeletionCurve",
    "FaithfulnessResult",
    "PairedDiff",
    "apply_fill",
    "available_codecs",
    "bootstrap_ci",
    "closed_loop_masked",
    "deletion_curve",
    "direction_cosine",
    "episode_counts",
    "episode_dir",
    "extract_attention",
    "faithfulness",
    "head_grid",
    "holm",
    "layer_strip",
    "mask_from_coco_rle",
    "mask_from_png",
    "mask_regions",
    "most_active_head",
    "normalize_map",
    "otsu_threshold",
    "overlap_metrics",
    "overlay",
    "paired_bootstrap_diff",
    "random_blobs",
    "read_video_frames",
    "resize_to",
    "run_attention",
    "save_image",
    "scale_invariant_mse",
    "summary_table",
    "wilson_interval",
    "write_report",
    "write_video",
]
