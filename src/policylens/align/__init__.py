"""align: RGB <-> point-cloud alignment — encoders with exact preprocessing records, uv -> patch
lookup with validity, multi-encoder fusion, symmetric InfoNCE (multi-positive, queue, DDP gather),
RGB-only distillation and the Spatial Forcing baseline, retrieval evaluation and a ridge baseline,
and stage 2: one action head on each feature source, trained and rolled out in the simulator."""

from . import _layout  # noqa: F401  (registers the store kinds patch_grid / point_cloud)
from ._correspondence import CorrespondenceStats, interior_mask, patch_labels, point_patch_agreement, project_points
from ._dataset import AlignDataset, episode_split, make_loader
from ._distill import Distiller, SpatialForcing, cosine_distance
from ._encoders import PatchEncoder, adapt_encoder, create_encoder, list_encoders, register_encoder
from ._extract import TINY, build_encoder, extract_features, frame_windows, grid_of
from ._fusion import FUSION_MODES, FusionConfig, FusionOutput, GateStats, MultiEncoderFusion, balance_loss
from ._head import ActionHead, HeadShape
from ._infonce import InfoNCE, gather_with_grad
from ._ingest import depth_cloud, fix_points, ingest_depth, ingest_ply, ply_files, read_ply_points
from ._layout import align_info
from ._oracle import OracleEncoder, oracle_retrieval
from ._plots import plot_similarity_hist, retrieval_markdown
from ._points import PointProjector
from ._record import CENTRES, RECORD_VERSION, PreprocessRecord, centre_offset, round_to_multiple, short_side_size
from ._retrieval import (
    POOLS,
    AlignmentReport,
    RetrievalScores,
    RowSplit,
    SimilarityStats,
    evaluate_alignment,
    held_out_rows,
)
from ._ridge import DEFAULT_LAMS, RidgeBaseline, RidgeMap, fit_ridge, ridge_baseline
from ._sampling import GridPoints, grid_to_uv, sample_features, uv_to_grid
from ._sources import SOURCES, FeatureSource, encoder_from_store, instruction_code
from ._stage2 import HeadConfig, HeadPolicy, evaluate_action_head, load_action_head, rollout_heads, train_action_head
from ._student import distill_student, load_student
from ._temporal import TEMPORAL_POOLS, TemporalPool
from ._train import (
    AlignModel,
    Amp,
    align_step,
    load_aligned,
    train_alignment,
)
from ._train_config import AMP_MODES, OBJECTIVES, AlignTrainConfig, DistillConfig, LoopConfig
from ._verify import AlignCheck, find_stores, verify_align
from ._visibility import Visibility, visible_points

__all__ = [
    "AMP_MODES",
    "CENTRES",
    "DEFAULT_LAMS",
    "FUSION_MODES",
    "OBJECTIVES",
    "POOLS",
    "RECORD_VERSION",
    "SOURCES",
    "TEMPORAL_POOLS",
    "TINY",
    "ActionHead",
    "AlignCheck",
    "AlignDataset",
    "AlignModel",
    "AlignTrainConfig",
    "AlignmentReport",
    "Amp",
    "CorrespondenceStats",
    "DistillConfig",
    "Distiller",
    "FeatureSource",
    "FusionConfig",
    "FusionOutput",
    "GateStats",
    "GridPoints",
    "HeadConfig",
    "HeadPolicy",
    "HeadShape",
    "InfoNCE",
    "LoopConfig",
    "MultiEncoderFusion",
    "OracleEncoder",
    "PatchEncoder",
    "PointProjector",
    "PreprocessRecord",
    "RetrievalScores",
    "RidgeBaseline",
    "RidgeMap",
    "RowSplit",
    "SimilarityStats",
    "SpatialForcing",
    "TemporalPool",
    "Visibility",
    "adapt_encoder",
    "align_info",
    "align_step",
    "balance_loss",
    "build_encoder",
    "centre_offset",
    "cosine_distance",
    "create_encoder",
    "depth_cloud",
    "distill_student",
    "encoder_from_store",
    "episode_split",
    "evaluate_action_head",
    "evaluate_alignment",
    "extract_features",
    "find_stores",
    "fit_ridge",
    "fix_points",
    "frame_windows",
    "gather_with_grad",
    "grid_of",
    "grid_to_uv",
    "held_out_rows",
    "ingest_depth",
    "ingest_ply",
    "instruction_code",
    "interior_mask",
    "list_encoders",
    "load_action_head",
    "load_aligned",
    "load_student",
    "make_loader",
    "oracle_retrieval",
    "patch_labels",
    "plot_similarity_hist",
    "ply_files",
    "point_patch_agreement",
    "project_points",
    "read_ply_points",
    "register_encoder",
    "retrieval_markdown",
    "ridge_baseline",
    "rollout_heads",
    "round_to_multiple",
    "sample_features",
    "short_side_size",
    "train_action_head",
    "train_alignment",
    "uv_to_grid",
    "verify_align",
    "visible_points",
]
