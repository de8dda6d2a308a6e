"""align: RGB <-> point-cloud alignment — encoders with exact preprocessing records, uv -> patch
lookup with validity, multi-encoder fusion, symmetric InfoNCE (multi-positive, queue, DDP gather),
RGB-only distillation and the Spatial Forcing baseline, retrieval evaluation and a ridge baseline."""

from ._correspondence import CorrespondenceStats, interior_mask, patch_labels, point_patch_agreement, project_points
from ._distill import Distiller, SpatialForcing, cosine_distance
from ._encoders import PatchEncoder, adapt_encoder, create_encoder, list_encoders, register_encoder
from ._fusion import FUSION_MODES, FusionConfig, FusionOutput, GateStats, MultiEncoderFusion, balance_loss
from ._infonce import InfoNCE, gather_with_grad
from ._plots import plot_similarity_hist, retrieval_markdown
from ._points import PointProjector
from ._record import RECORD_VERSION, PreprocessRecord, round_to_multiple
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
from ._temporal import TEMPORAL_POOLS, TemporalPool

__all__ = [
    "DEFAULT_LAMS",
    "FUSION_MODES",
    "POOLS",
    "RECORD_VERSION",
    "TEMPORAL_POOLS",
    "AlignmentReport",
    "CorrespondenceStats",
    "Distiller",
    "FusionConfig",
    "FusionOutput",
    "GateStats",
    "GridPoints",
    "InfoNCE",
    "MultiEncoderFusion",
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
    "adapt_encoder",
    "balance_loss",
    "cosine_distance",
    "create_encoder",
    "evaluate_alignment",
    "fit_ridge",
    "gather_with_grad",
    "grid_to_uv",
    "held_out_rows",
    "interior_mask",
    "list_encoders",
    "patch_labels",
    "plot_similarity_hist",
    "point_patch_agreement",
    "project_points",
    "register_encoder",
    "retrieval_markdown",
    "ridge_baseline",
    "round_to_multiple",
    "sample_features",
    "uv_to_grid",
]
