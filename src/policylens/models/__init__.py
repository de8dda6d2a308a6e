"""models: adapters for real architectures, and the project's reference policies.

Importing this package registers adapters for HF PaliGemma, Gemma / Gemma2 / Qwen2 /
Llama decoders, SigLIP, DINOv2, LeRobot's pi0 / pi0.5 / SmolVLA, VLA-Adapter's Prismatic
(by name, lazily) and ``TinyVLA``. ``TinyVLA`` and its training loop are built on
transformers' PaliGemma, so they are imported on first use: on a transformers without it
(VLA-Adapter pins 4.40.1) this package and the taps still work.
"""

import importlib
import sys
from functools import partial
from pathlib import Path

import torch

from ..runs import (
    TrainingInterrupted,
    check_run_dir,
    check_safetensors,
    claim_run_dir,
    list_policy_names,
    list_policy_types,
    load_train_state,
    read_safetensors,
    register_policy_name,
    register_policy_type,
    save_train_state,
)
from ..runs import load_checkpoint as load_policy
from ..runs import save_checkpoint as save_policy
from ..tap import get_adapter, list_adapters, register_adapter
from . import _hf_adapters, _hf_pi_adapters, _lerobot_adapters, _prismatic_adapter  # noqa: F401  (registrations)
from ._data_parallel import average_gradients
from ._hf_compat import align_state_dict
from ._hf_pi_adapters import native_pi_layout
from ._hf_pi_policy import DEFAULT_CAMERAS as PI_DEFAULT_CAMERAS
from ._hf_pi_policy import NativePIPolicy, load_native_pi, pi_image_processor
from ._lerobot_adapters import lerobot_adapter, lerobot_layout
from ._lerobot_teacher import LeRobotTeacher, is_lerobot_checkpoint, load_lerobot_teacher
from ._loading import load_hf_model, load_model
from ._replay import check_replay, check_replay_fraction, mixed_rows, replay_rows
from ._tiny_vla_config import TinyVLAConfig
from ._tokenizer import ByteTokenizer
from .diffusion import POLICY_TYPE, DiffusionPolicyConfig, TinyDiffusionPolicy
from .diffusion._metaworld import METAWORLD_ASSETS

_ON_FIRST_USE = {  # name -> module: these need transformers' PaliGemma (>= 4.57.1)
    "TinyVLA": "._tiny_vla",
    "VLATrainConfig": "._train_vla",
    "VLA_OPTIONAL_SETTINGS": "._train_vla",
    "check_vla_run": "._train_vla",
    "flow_loss": "._train_vla",
    "flow_noise": "._train_vla",
    "load_tiny_vla_init": "._train_vla",
    "run_settings_of": "._train_vla",
    "train_vla": "._train_vla",
    "vla_step": "._train_vla",
}


def __getattr__(name: str):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_ON_FIRST_USE[name], __name__), name)
    globals()[name] = value
    return value


def _tiny_vla_config(model: object) -> dict:
    tiny_vla = sys.modules.get(f"{__name__}._tiny_vla")  # not imported yet: no TinyVLA exists
    if tiny_vla is None or not isinstance(model, tiny_vla.TinyVLA):
        raise TypeError(f"not a TinyVLA: {type(model).__name__}")
    return model.config.to_dict()


def _build_tiny_vla(config: TinyVLAConfig) -> torch.nn.Module:
    from ._tiny_vla import TinyVLA

    return TinyVLA(config)


TINY_VLA_ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny_vla_reach"


def _default_tiny_vla() -> torch.nn.Module:
    """The shipped trained reach checkpoint; a seeded random TinyVLA if it is absent."""
    if (TINY_VLA_ASSET / "model.safetensors").is_file():
        return load_policy(TINY_VLA_ASSET)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _build_tiny_vla(TinyVLAConfig()).eval()


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
for _config in sorted(METAWORLD_ASSETS.glob("*/config.json")):  # the shipped MetaWorld reference policies
    register_policy_name(
        f"metaworld/{_config.parent.name}", partial(TinyDiffusionPolicy.from_pretrained, _config.parent)
    )
register_policy_type(
    "tiny_vla",
    build=lambda cfg: _build_tiny_vla(TinyVLAConfig.from_dict(cfg)),
    config_of=_tiny_vla_config,
    default=_default_tiny_vla,
    rename_state=align_state_dict,  # PaliGemma's SigLIP keys differ between transformers 4.x and 5.x
)

__all__ = [
    "PI_DEFAULT_CAMERAS",
    "VLA_OPTIONAL_SETTINGS",
    "ByteTokenizer",
    "DiffusionPolicyConfig",
    "LeRobotTeacher",
    "NativePIPolicy",
    "TinyDiffusionPolicy",
    "TinyVLA",
    "TinyVLAConfig",
    "TrainingInterrupted",
    "VLATrainConfig",
    "average_gradients",
    "check_replay",
    "check_replay_fraction",
    "check_run_dir",
    "check_safetensors",
    "check_vla_run",
    "claim_run_dir",
    "flow_loss",
    "flow_noise",
    "get_adapter",
    "is_lerobot_checkpoint",
    "lerobot_adapter",
    "lerobot_layout",
    "list_adapters",
    "list_policy_names",
    "list_policy_types",
    "load_hf_model",
    "load_lerobot_teacher",
    "load_model",
    "load_native_pi",
    "load_policy",
    "load_tiny_vla_init",
    "load_train_state",
    "mixed_rows",
    "native_pi_layout",
    "pi_image_processor",
    "read_safetensors",
    "register_adapter",
    "register_policy_name",
    "register_policy_type",
    "replay_rows",
    "run_settings_of",
    "save_policy",
    "save_train_state",
    "train_vla",
    "vla_step",
]
