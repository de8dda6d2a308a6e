"""models: adapters for real architectures, and the project's reference policies.

Importing this package registers adapters for HF PaliGemma, Gemma / Gemma2 / Qwen2 /
Llama decoders, SigLIP, DINOv2, LeRobot's pi0 / pi0.5 / SmolVLA (by name, lazily) and
``TinyVLA``.
"""

from pathlib import Path

import torch

from ..tap import get_adapter, list_adapters, register_adapter
from . import _hf_adapters, _lerobot_adapters  # noqa: F401  (registrations)
from ._checkpoint import list_policy_types, load_policy, register_policy_type, save_policy
from ._lerobot_adapters import lerobot_adapter, lerobot_layout
from ._lerobot_teacher import LeRobotTeacher, is_lerobot_checkpoint, load_lerobot_teacher
from ._loading import load_hf_model, load_model
from ._tiny_vla import TinyVLA
from ._tiny_vla_config import TinyVLAConfig
from ._tokenizer import ByteTokenizer
from ._train_state import TrainingInterrupted, check_run_dir, claim_run_dir, load_train_state, save_train_state
from ._train_vla import VLATrainConfig, run_settings_of, train_vla, vla_step
from .diffusion import POLICY_TYPE, DiffusionChunkPredictor, DiffusionPolicyConfig, TinyDiffusionPolicy


def _tiny_vla_config(model: object) -> dict:
    if not isinstance(model, TinyVLA):
        raise TypeError(f"not a TinyVLA: {type(model).__name__}")
    return model.config.to_dict()


TINY_VLA_ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny_vla_reach"


def _default_tiny_vla() -> TinyVLA:
    """The shipped trained reach checkpoint; a seeded random TinyVLA if it is absent."""
    if (TINY_VLA_ASSET / "model.safetensors").is_file():
        return load_policy(TINY_VLA_ASSET)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyVLA(TinyVLAConfig()).eval()


DIFFUSION_ASSET = Path(__file__).resolve().parents[1] / "assets" / "diffusion_reach"


def _diffusion_config(model: object) -> dict:
    if not isinstance(model, TinyDiffusionPolicy):
        raise TypeError(f"not a TinyDiffusionPolicy: {type(model).__name__}")
    return {k: v for k, v in model.config.to_dict().items() if k != "type"}


register_policy_type(
    POLICY_TYPE,
    build=lambda cfg: TinyDiffusionPolicy(DiffusionPolicyConfig.from_dict(dict(cfg))),
    config_of=_diffusion_config,
    default=lambda: TinyDiffusionPolicy.from_pretrained(DIFFUSION_ASSET),
)
register_policy_type(
    "tiny_vla",
    build=lambda cfg: TinyVLA(TinyVLAConfig.from_dict(cfg)),
    config_of=_tiny_vla_config,
    default=_default_tiny_vla,
)

__all__ = [
    "ByteTokenizer",
    "DiffusionChunkPredictor",
    "DiffusionPolicyConfig",
    "LeRobotTeacher",
    "TinyDiffusionPolicy",
    "TinyVLA",
    "TinyVLAConfig",
    "TrainingInterrupted",
    "VLATrainConfig",
    "check_run_dir",
    "claim_run_dir",
    "get_adapter",
    "is_lerobot_checkpoint",
    "lerobot_adapter",
    "lerobot_layout",
    "list_adapters",
    "list_policy_types",
    "load_hf_model",
    "load_lerobot_teacher",
    "load_model",
    "load_policy",
    "load_train_state",
    "register_adapter",
    "register_policy_type",
    "run_settings_of",
    "save_policy",
    "save_train_state",
    "train_vla",
    "vla_step",
]
