"""A zoo of tiny real architectures built from ``transformers`` configs."""

from __future__ import annotations

import copy

import torch
from transformers import (
    Dinov2Config,
    Dinov2Model,
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 28,
    "patch_size": 14,
}
DECODER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
}


def tiny_paligemma(seed: int = 0) -> PaliGemmaForConditionalGeneration:
    torch.manual_seed(seed)
    text = GemmaConfig(**DECODER, head_dim=8)
    cfg = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(**VISION).to_dict(),
        text_config=text.to_dict(),
        image_token_id=63,
        projection_dim=32,
    )
    return PaliGemmaForConditionalGeneration(cfg).eval()


def paligemma_batch(n_images: int = 2, text: int = 5, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Image tokens first (4 per 28×28 image), then text; the second sample is right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((batch, 4 * n_images), 63), torch.randint(2, 60, (batch, text), generator=g)], 1)
    mask = torch.ones_like(ids)
    mask[1:, -2:] = 0
    pixels = torch.randn(batch * n_images, 3, 28, 28, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def tiny_decoder(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "gemma":
        return GemmaForCausalLM(GemmaConfig(**DECODER, head_dim=8)).eval()
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**DECODER)).eval()
    return LlamaForCausalLM(LlamaConfig(**DECODER)).eval()


def tiny_vision(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "siglip":
        return SiglipVisionModel(SiglipVisionConfig(**VISION)).eval()
    return Dinov2Model(Dinov2Config(**VISION)).eval()


def eager_twin(model: torch.nn.Module) -> torch.nn.Module:
    twin = copy.deepcopy(model)
    twin.set_attn_implementation("eager")
    return twin


def tiny_diffusion_policy(seed: int = 0, steps: int = 12, n_cond_layers: int = 0):
    """A 2-layer TinyDiffusionPolicy (obs 4, action 2, horizon 8) with ``steps`` denoising steps."""
    from policylens.models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy

    torch.manual_seed(seed)
    cfg = DiffusionPolicyConfig(
        obs_dim=4,
        action_dim=2,
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        n_layer=2,
        n_head=2,
        n_emb=16,
        n_cond_layers=n_cond_layers,
        num_inference_steps=steps,
    )
    return TinyDiffusionPolicy(cfg).eval()


def vla_episodes(n: int = 2, t: int = 5) -> list[dict]:
    """``n`` random two-camera TinyVLA training episodes of ``t`` steps at 28 px (train_vla's format)."""
    import numpy as np

    rng = np.random.default_rng(0)
    cams = ("varied_camera_1", "hand_camera")
    return [
        {
            "images": {c: rng.integers(0, 255, (t, 28, 28, 3), dtype=np.uint8) for c in cams},
            "state": rng.normal(size=(t, 7)).astype(np.float32),
            "action": rng.normal(loc=2.0, size=(t, 7)).astype(np.float32),
            "instruction": "reach the red cube",
        }
        for _ in range(n)
    ]
