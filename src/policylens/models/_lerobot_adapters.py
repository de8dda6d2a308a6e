"""Adapters for LeRobot's pi0, pi0.5 and SmolVLA policies.

LeRobot pins ``torch<2.11`` and ``transformers<5``, so it is never imported here: the
adapters are registered by class name and only match when the user's environment has
LeRobot and passes one of its policies. The token-layout logic is plain code
(``policylens.tap.pi0_layout``) tested on tensors of the same layout.

Attention probabilities: pi0 / pi0.5 compute the joint prefix + expert attention by
calling ``modeling_gemma.eager_attention_forward`` as a free function, which no module
hook sees, so these adapters offer hidden-state taps only (``attention="none"``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..tap import Adapter, Component, Layout, pi0_layout, register_adapter

__all__ = ["lerobot_layout"]

LANG_MASK_KEY = "observation.language.attention_mask"
TOKENS_PER_IMAGE = {"pi0": 256, "pi05": 256, "smolvla": 64}


def lerobot_layout(variant: str, config: object, batch: Mapping[str, Tensor]) -> Layout:
    """Token layout of a LeRobot VLA batch: cameras are the config's image features present
    in the batch (absent ones are padding, as LeRobot pads missing cameras)."""
    if LANG_MASK_KEY not in batch:
        raise KeyError(f"lerobot_layout: the batch lacks {LANG_MASK_KEY!r}; run the policy's preprocessor first")
    lang = batch[LANG_MASK_KEY].bool()
    cameras = list(getattr(config, "image_features", {}) or {})
    if not cameras:
        raise ValueError("lerobot_layout: the policy config lists no image_features")
    present = torch.tensor([[cam in batch for cam in cameras]] * lang.shape[0])
    per_image = TOKENS_PER_IMAGE[variant]
    chunk = int(getattr(config, "chunk_size", 50))
    return pi0_layout(variant, present, per_image, lang, chunk, cameras=cameras)


def _pi0_adapter(variant: str) -> Adapter:
    root = "model.paligemma_with_expert."
    return Adapter(
        name=f"lerobot_{variant}",
        components=(
            Component(
                "vision",
                layers=(
                    f"{root}paligemma.model.vision_tower.vision_model.encoder.layers",
                    f"{root}paligemma.vision_tower.vision_model.encoder.layers",
                ),
                attention="none",
                sequence="vision",
            ),
            Component(
                "llm",
                layers=(f"{root}paligemma.model.language_model.layers", f"{root}paligemma.language_model.model.layers"),
                attention="none",
            ),
            Component("expert", layers=(f"{root}gemma_expert.model.layers",), attention="none", sequence="suffix"),
        ),
        layout=lambda model, batch: lerobot_layout(variant, model.config, batch),
    )


def _smolvla_adapter(_model: nn.Module) -> Adapter:
    root = "model.vlm_with_expert."
    return Adapter(
        name="lerobot_smolvla",
        components=(
            Component(
                "vision", layers=(f"{root}vlm.model.vision_model.encoder.layers",), attention="none", sequence="vision"
            ),
            Component("llm", layers=(f"{root}vlm.model.text_model.layers",), attention="none"),
            Component("expert", layers=(f"{root}lm_expert.layers",), attention="none", sequence="suffix"),
        ),
        layout=lambda model, batch: lerobot_layout("smolvla", model.config, batch),
    )


register_adapter("lerobot.policies.pi0.modeling_pi0.PI0Policy", lambda _m: _pi0_adapter("pi0"))
register_adapter("lerobot.policies.pi05.modeling_pi05.PI05Policy", lambda _m: _pi0_adapter("pi05"))
register_adapter("lerobot.policies.smolvla.modeling_smolvla.SmolVLAPolicy", _smolvla_adapter)
