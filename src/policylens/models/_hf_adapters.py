"""Adapters for Hugging Face architectures: PaliGemma, Gemma/Gemma2/Qwen2/Llama decoders,
SigLIP and DINOv2 vision towers, and the project's reference policies TinyVLA and
TinyDiffusionPolicy (whose denoiser is built from ``nn.Transformer*Layer`` blocks)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..tap import Adapter, Component, Layout, PatchGrid, TokenSpans, paligemma_spans, register_adapter

__all__: list[str] = []

_T = "transformers.models"


def _text_layout(_model: nn.Module, batch: Mapping[str, Tensor]) -> Layout:
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    valid = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    return Layout({"prefix": TokenSpans({"text": valid, "valid": valid})})


def _vision_layout(n_special: int):
    def layout(model: nn.Module, batch: Mapping[str, Tensor]) -> Layout:
        cfg = model.config
        pixels = batch["pixel_values"]
        n = (pixels.shape[-1] // cfg.patch_size) * (pixels.shape[-2] // cfg.patch_size) + n_special
        special = torch.zeros(pixels.shape[0], n, dtype=torch.bool)
        special[:, :n_special] = True
        masks = {"image[cam0]": ~special, "valid": torch.ones_like(special)}
        if n_special:
            masks["cls"] = special
        return Layout({"vision": TokenSpans(masks, ("cam0",))})

    return layout


def _paligemma_layout(model: nn.Module, batch: Mapping[str, Tensor]) -> Layout:
    cfg = model.config
    per_image = cfg.text_config.num_image_tokens
    prefix = paligemma_spans(batch["input_ids"], batch.get("attention_mask"), cfg.image_token_id, per_image)
    side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    prefix.grids.update(dict.fromkeys(prefix.cameras, PatchGrid(side, side)))  # row-major SigLIP patches
    n_images = int(batch["pixel_values"].shape[0])
    all_tokens = torch.ones(n_images, per_image, dtype=torch.bool)
    return Layout({"vision": TokenSpans({"image[all]": all_tokens, "valid": all_tokens}), "prefix": prefix})


def _decoder(prefixes: tuple[str, ...]) -> Adapter:
    return Adapter(
        name="decoder",
        components=(
            Component("llm", layers=tuple(f"{p}layers" for p in prefixes), norm=tuple(f"{p}norm" for p in prefixes)),
        ),
        layout=_text_layout,
    )


SIGLIP_LAYERS = ("encoder.layers", "vision_model.encoder.layers")

PALIGEMMA = Adapter(
    name="paligemma",
    components=(
        Component(
            "vision",
            layers=tuple(f"{r}vision_tower.{p}" for r in ("model.", "") for p in SIGLIP_LAYERS),
            sequence="vision",
        ),
        Component(
            "llm",
            layers=("model.language_model.layers", "language_model.layers"),
            norm=("model.language_model.norm", "language_model.norm"),
        ),
    ),
    extras={"projector": ("model.multi_modal_projector", "multi_modal_projector")},
    layout=_paligemma_layout,
)

TINY_VLA = Adapter(
    name="tiny_vla",
    components=(
        Component("vision", layers=tuple(f"paligemma.vision_tower.{p}" for p in SIGLIP_LAYERS), sequence="vision"),
        Component("llm", layers=("paligemma.language_model.layers",), norm=("paligemma.language_model.norm",)),
        Component("expert", layers=("expert.layers",), norm=("expert.norm",), sequence="suffix"),
    ),
    # action_out: the action head, one record per flow step (the predicted velocity (B, H, action_dim))
    extras={"projector": ("paligemma.multi_modal_projector",), "action_out": ("action_out",)},
    layout=lambda model, batch: model.token_layout(batch),
)

SIGLIP = Adapter(
    name="siglip_vision",
    components=(
        Component(
            "vision", layers=SIGLIP_LAYERS, norm=("post_layernorm", "vision_model.post_layernorm"), sequence="vision"
        ),
    ),
    layout=_vision_layout(0),
)

DINOV2 = Adapter(
    name="dinov2",
    components=(
        Component("vision", layers=("encoder.layer",), attn="attention", norm=("layernorm",), sequence="vision"),
    ),
    layout=lambda model, batch: _vision_layout(
        1 + model.config.num_register_tokens if hasattr(model.config, "num_register_tokens") else 1
    )(model, batch),
)

for _cls in (
    "paligemma.modeling_paligemma.PaliGemmaForConditionalGeneration",
    "paligemma.modeling_paligemma.PaliGemmaModel",
):
    register_adapter(f"{_T}.{_cls}", PALIGEMMA)
for _family in (
    "gemma.modeling_gemma.Gemma",
    "gemma2.modeling_gemma2.Gemma2",
    "qwen2.modeling_qwen2.Qwen2",
    "llama.modeling_llama.Llama",
):
    register_adapter(f"{_T}.{_family}ForCausalLM", _decoder(("model.",)))
    register_adapter(f"{_T}.{_family}Model", _decoder(("",)))
register_adapter(f"{_T}.siglip.modeling_siglip.SiglipVisionModel", SIGLIP)
register_adapter(f"{_T}.dinov2.modeling_dinov2.Dinov2Model", DINOV2)
register_adapter("policylens.models._tiny_vla.TinyVLA", TINY_VLA)


def _diffusion_layout(model: nn.Module, batch: Mapping[str, Tensor]) -> Layout:
    """``prefix``: the condition memory ``[time, obs_1 … obs_To]``; ``suffix``: the ``horizon`` action tokens."""
    cfg = model.config
    b = batch["obs"].shape[0]
    time = torch.zeros(b, 1 + cfg.n_obs_steps, dtype=torch.bool)
    time[:, 0] = True
    prefix = TokenSpans({"time": time, "state": ~time, "valid": torch.ones_like(time)})
    action = torch.ones(b, cfg.horizon, dtype=torch.bool)
    return Layout({"prefix": prefix, "suffix": TokenSpans({"action": action, "valid": action})})


def _diffusion_adapter(root: str):
    """Decoder blocks (``nn.TransformerDecoderLayer``): ``decoder`` taps their self-attention over the
    action tokens, ``cross`` their cross-attention to the condition memory (the same blocks, so
    ``cross.layers.{i}.in`` / ``.out`` equal ``decoder.layers.{i}.in`` / ``.out``); ``mlp.out`` is
    ``linear2``'s output, the feed-forward branch. ``encoder`` exists when ``n_cond_layers > 0``;
    ``memory.out`` is the condition encoder's output either way."""

    def factory(model: nn.Module) -> Adapter:
        decoder = (f"{root}decoder.layers",)
        components = [
            Component("decoder", decoder, mlp="linear2", norm=(f"{root}ln_f",), attention="mha", sequence="suffix"),
            Component("cross", decoder, attn="multihead_attn", mlp="", attention="mha", sequence="suffix"),
        ]
        if model.config.n_cond_layers > 0:
            components.append(Component("encoder", (f"{root}encoder.layers",), mlp="linear2", attention="mha"))
        return Adapter(
            name="tiny_diffusion_policy",
            components=tuple(components),
            extras={"memory": (f"{root}encoder",)},
            layout=_diffusion_layout,
        )

    return factory


register_adapter("policylens.models.diffusion._policy.TinyDiffusionPolicy", _diffusion_adapter("model."))
register_adapter("policylens.models.diffusion._transformer.TransformerForDiffusion", _diffusion_adapter(""))
