"""Load any supported model: a built-in name, a policylens checkpoint, or a Hugging Face
checkpoint directory / hub id (offline here; the same code loads hub checkpoints where
the hub is reachable). A damaged ``*.safetensors`` in a local checkpoint directory raises one
``ValueError`` naming that file (``runs.check_safetensors``) before anything is built."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .._jsonfile import read_json_file
from ..runs import CONFIG_FILE, check_safetensors, list_policy_types, load_checkpoint
from ._hf_pi_policy import is_native_pi_checkpoint, load_native_pi
from ._lerobot_teacher import is_lerobot_checkpoint, load_lerobot_teacher

__all__ = ["load_hf_model", "load_model"]


def load_hf_model(path_or_id: str | Path, attn_implementation: str = "sdpa") -> nn.Module:
    """A ``transformers`` model from a checkpoint, using the class its config names in
    ``architectures`` (e.g. ``PaliGemmaForConditionalGeneration``)."""
    import transformers  # imported here: a policylens checkpoint loads without it (seconds of import)

    if Path(path_or_id).is_dir():
        for weights in sorted(Path(path_or_id).glob("*.safetensors")):
            check_safetensors(weights)
    config = transformers.AutoConfig.from_pretrained(str(path_or_id))
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise ValueError(f"load_hf_model: {path_or_id}/config.json has no 'architectures' entry naming the model class")
    cls = getattr(transformers, names[0], None)
    if cls is None:
        raise ValueError(f"load_hf_model: transformers {transformers.__version__} has no class {names[0]!r}")
    return cls.from_pretrained(str(path_or_id), attn_implementation=attn_implementation).eval()


PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def load_model(spec: str | Path) -> nn.Module:
    """A built-in policy name, a policylens checkpoint directory, a LeRobot pi0 / pi0.5 / SmolVLA
    checkpoint directory (as a :class:`LeRobotTeacher`, with its saved pre-processor; needs
    ``lerobot``), a native transformers pi0 / pi0.5 directory with its processor (as a
    :class:`NativePIPolicy`; a bare model without processor files loads as the model), or an HF checkpoint."""
    path = Path(spec)
    config = path / CONFIG_FILE
    if is_lerobot_checkpoint(path):
        return load_lerobot_teacher(path)
    if config.is_file() and "type" in read_json_file(config, f"a checkpoint config ({CONFIG_FILE})"):
        return load_checkpoint(path)
    if str(spec) in list_policy_types() and not path.exists():
        return load_checkpoint(spec)
    if is_native_pi_checkpoint(path) and any((path / f).is_file() for f in PROCESSOR_FILES):
        return load_native_pi(path)
    if config.is_file():
        return load_hf_model(path)
    raise FileNotFoundError(
        f"load_model: {spec!r} is neither a built-in policy ({list_policy_types()}) nor a directory holding "
        f"{CONFIG_FILE}. Pass a policylens or Hugging Face checkpoint directory."
    )
