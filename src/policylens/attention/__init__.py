"""attention: where a VLA looks — attention maps of the prefix (text -> image) and suffix
(action -> image) phases per camera on each camera's patch grid, overlays and videos, the
resumable job over episodes, object-overlap metrics and statistics over episodes; the faithfulness
tests and the modality-ablation battery (what the policy really uses)."""

from ._ablate import AblationConfig, AblationInterrupted, run_ablation
from ._ablate_closed import AblatedChunks, ablated_agent, rollout_condition
from ._ablate_conditions import (
    CAMERA_KINDS,
    CAMERAS_KINDS,
    INSTRUCTION_KINDS,
    Condition,
    apply_condition,
    conditions_for,
    parse_conditions,
)
from ._ablate_open import measure_episode, span_mass
from ._ablate_removal import policy_batch, removal_unavailable
from ._ablate_summary import plot_ablation, summarize_ablation
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
from ._faithfulness_run import faithfulness_tables, run_faithfulness
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
    "CAMERAS_KINDS",
    "CAMERA_KINDS",
    "FILLS",
    "INSTRUCTION_KINDS",
    "PHASES",
    "RUN_MODES",
    "STEP_MODES",
    "AblatedChunks",
    "AblationConfig",
    "AblationInterrupted",
    "AttentionInterrupted",
    "AttentionMaps",
    "AttentionRunConfig",
    "BootstrapCI",
    "Condition",
    "DeletionCurve",
    "FaithfulnessResult",
    "PairedDiff",
    "ablated_agent",
    "apply_condition",
    "apply_fill",
    "available_codecs",
    "bootstrap_ci",
    "closed_loop_masked",
    "conditions_for",
    "deletion_curve",
    "direction_cosine",
    "episode_counts",
    "episode_dir",
    "extract_attention",
    "faithfulness",
    "faithfulness_tables",
    "head_grid",
    "holm",
    "layer_strip",
    "mask_from_coco_rle",
    "mask_from_png",
    "mask_regions",
    "measure_episode",
    "most_active_head",
    "normalize_map",
    "otsu_threshold",
    "overlap_metrics",
    "overlay",
    "paired_bootstrap_diff",
    "parse_conditions",
    "plot_ablation",
    "policy_batch",
    "random_blobs",
    "read_video_frames",
    "removal_unavailable",
    "resize_to",
    "rollout_condition",
    "run_ablation",
    "run_attention",
    "run_faithfulness",
    "save_image",
    "scale_invariant_mse",
    "span_mass",
    "summarize_ablation",
    "summary_table",
    "wilson_interval",
    "write_report",
    "write_video",
]
