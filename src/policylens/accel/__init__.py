"""accel: block-wise adaptive caching (BAC) of transformer diffusion denoisers and flow-matching
action experts (torch transformer layers; transformers Gemma / Gemma2 / Gemma3 / Llama / Qwen2 /
pi0.5 decoder layers).

>>> cal = calibrate(policy, observations, num_updates=10, n_bu=2)
>>> with cache_context(policy, BACConfig(mode="optimal", calibration=cal)):
...     actions = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
"""

from . import _lerobot  # noqa: F401  (registers LeRobotTeacher's profiles)
from ._calibrate import calibrate, num_rows, take_rows
from ._calibration import Calibration
from ._config import METRICS, MODES, BACConfig
from ._eval import action_error, compare_modes, evaluate_mode, load_observations, random_observations, time_calls
from ._hash import model_hash
from ._hf_blocks import HF_LAYERS
from ._metrics import step_matrices
from ._plots import plot_bu_scores, plot_schedule, plot_similarity, save_plots
from ._profiles import PolicyProfile, default_steps, policy_profile, register_policy
from ._registry import BlockSpec, Branch, BranchSpec, discover_branches, list_blocks, register_block, unregister_block
from ._runtime import apply_cache, cache_context, cache_info, remove_cache, reset_state
from ._schedule import (
    bubbling_union,
    optimal_update_steps,
    reuse_error_scores,
    segment_scores,
    steps_to_mask,
    uniform_update_steps,
)

__all__ = [
    "HF_LAYERS",
    "METRICS",
    "MODES",
    "BACConfig",
    "BlockSpec",
    "Branch",
    "BranchSpec",
    "Calibration",
    "PolicyProfile",
    "action_error",
    "apply_cache",
    "bubbling_union",
    "cache_context",
    "cache_info",
    "calibrate",
    "compare_modes",
    "default_steps",
    "discover_branches",
    "evaluate_mode",
    "list_blocks",
    "load_observations",
    "model_hash",
    "num_rows",
    "optimal_update_steps",
    "plot_bu_scores",
    "plot_schedule",
    "plot_similarity",
    "policy_profile",
    "random_observations",
    "register_block",
    "register_policy",
    "remove_cache",
    "reset_state",
    "reuse_error_scores",
    "save_plots",
    "segment_scores",
    "step_matrices",
    "steps_to_mask",
    "take_rows",
    "time_calls",
    "uniform_update_steps",
    "unregister_block",
]
