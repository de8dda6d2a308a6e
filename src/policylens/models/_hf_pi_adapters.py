"""Adapters for pi0 and pi0.5 as transformers ships them (``PI0ForConditionalGeneration``,
``PI05ForConditionalGeneration``, transformers >= 5.25).

Module tree: vision ``model.vlm.vision_tower.encoder.layers`` (SigLIP), LLM
``model.vlm.language_model.layers`` + ``.norm``, projector ``model.vlm.multi_modal_projector``,
action expert ``model.dit.layers`` + ``model.dit.norm`` (pi0: a ``GemmaModel``; pi0.5:
``PI05ActionExpertModel``, whose adaptive norms return ``(normed, gate)``). Each layer is called as
a whole module, so every tap is a forward hook; the expert's taps fire once per flow step of
``sample_actions``. Attention probabilities go through transformers' attention functions
(``tap._hf_attention``): the LLM's are ``(B, H, T, T)`` over the prefix, the expert's
``(B, H, S, T + S)`` over the cached prefix followed by the suffix.

Layout, read from the batch and the config: the processor writes ``image_seq_length`` image tokens
per *present* camera (``pixel_attention_mask``), then BOS, the prompt and right padding; the r-th
image block belongs to the r-th present camera, as ``embed_prefix`` maps it. The vision sequence
holds every camera slot's image (absent cameras run as zero images: ``valid`` is False there).
pi0's suffix is ``[state, action × chunk_size]``; pi0.5's is the action chunk, its state written
into the prompt as integers (``"…, State: 12 200 …;\\nAction: "``): with the processor's tokenizer
those tokens form the ``state`` span, without it they stay in ``text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..tap import Adapter, Component, Layout, PatchGrid, TokenSpans, register_adapter

__all__ = ["PI_VARIANTS", "native_pi_layout", "pi_camera_names", "pi_variant"]

PI_VARIANTS = {"PI0ForConditionalGeneration": "pi0", "PI05ForConditionalGeneration": "pi05"}
_T = "transformers.models"


def pi_variant(model: nn.Module) -> str:
    """``"pi0"`` or ``"pi05"`` for a native model (or a subclass of one)."""
    for cls in type(model).__mro__:
        if cls.__name__ in PI_VARIANTS:
            return PI_VARIANTS[cls.__name__]
    raise TypeError(f"{type(model).__name__} is not transformers' PI0ForConditionalGeneration or PI05…")


def pi_camera_names(n: int, cameras: Sequence[str] | None = None) -> tuple[str, ...]:
    """Names of the ``n`` camera slots: ``cameras`` when given (one per slot), else ``cam0`` …"""
    if cameras is None:
        return tuple(f"cam{i}" for i in range(n))
    if len(cameras) != n:
        raise ValueError(f"cameras={list(cameras)}: the batch has {n} camera slots (pixel_attention_mask)")
    return tuple(cameras)


def _tokens_per_image(config) -> int:
    vision = config.vlm_config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def _state_tokens(ids: Tensor, valid: Tensor, tokenizer) -> Tensor:
    """(B, T) bool: the prompt tokens between ``"State:"`` and the ``";"`` that ends it (pi0.5)."""
    out = torch.zeros_like(valid)
    for b in range(ids.shape[0]):
        pos = valid[b].nonzero().flatten().tolist()
        pieces = [tokenizer.decode([int(ids[b, p])]) for p in pos]
        text = "".join(pieces)
        start = text.find("State:")
        if start < 0:
            continue
        start += len("State:")
        end = text.find(";", start)
        end = len(text) if end < 0 else end
        offset = 0
        for p, piece in zip(pos, pieces, strict=True):
            if offset < end and offset + len(piece) > start:
                out[b, p] = True
            offset += len(piece)
    return out


def native_pi_layout(
    model: nn.Module, batch: Mapping[str, Tensor], cameras: Sequence[str] | None = None, tokenizer=None
) -> Layout:
    """``vision`` / ``prefix`` / ``suffix`` / ``joint`` spans of a native pi0 or pi0.5 batch
    (``input_ids``, ``attention_mask``, ``pixel_attention_mask``)."""
    cfg, variant = model.config, pi_variant(model)
    ids = batch["input_ids"]
    b, t = ids.shape
    valid = batch["attention_mask"].bool() if batch.get("attention_mask") is not None else torch.ones_like(ids).bool()
    present = batch["pixel_attention_mask"].bool().cpu()  # (B, C)
    names = pi_camera_names(present.shape[1], cameras)
    per = _tokens_per_image(cfg)
    special = (ids == cfg.vlm_config.image_token_id).cpu()
    rank = special.long().cumsum(-1) - 1  # the image token's index among the sample's image tokens
    block = torch.where(special, rank // per, -1)  # which present camera's block
    slot_of_block = present.long().cumsum(-1) - 1  # (B, C): a present slot's rank among present slots
    masks: dict[str, Tensor] = {}
    for k, name in enumerate(names):
        rank_k = torch.where(present[:, k], slot_of_block[:, k], -2)[:, None]  # -2: absent, matches nothing
        masks[f"image[{name}]"] = special & (block == rank_k)
    valid = valid.cpu()
    text = valid & ~special
    state = torch.zeros_like(text)
    if variant == "pi05" and tokenizer is not None:
        state = _state_tokens(ids.cpu(), text, tokenizer)
        text &= ~state
    masks.update(text=text, state=state, valid=valid)
    prefix = TokenSpans(masks, names)
    side = cfg.vlm_config.vision_config.image_size // cfg.vlm_config.vision_config.patch_size
    prefix.grids.update(dict.fromkeys(names, PatchGrid(side, side)))
    n_state = 1 if variant == "pi0" else 0
    suffix_state = torch.zeros(b, n_state + cfg.chunk_size, dtype=torch.bool)
    suffix_state[:, :n_state] = True
    suffix = TokenSpans({"state": suffix_state, "action": ~suffix_state, "valid": torch.ones_like(suffix_state)})
    none_p, none_s = torch.zeros(b, t, dtype=torch.bool), torch.zeros_like(suffix_state)
    joint = {
        k: torch.cat([prefix.masks.get(k, none_p), suffix.masks.get(k, none_s)], 1)
        for k in sorted(set(prefix.masks) | set(suffix.masks))
    }
    images = present.reshape(-1, 1).expand(-1, per)  # every camera slot's image, absent ones are zeros
    vision = TokenSpans({"image[all]": torch.ones_like(images), "valid": images.clone()})
    return Layout({"vision": vision, "prefix": prefix, "suffix": suffix, "joint": TokenSpans(joint, names)})


NATIVE_PI = Adapter(
    name="pi_native",
    components=(
        Component("vision", layers=("model.vlm.vision_tower.encoder.layers",), sequence="vision"),
        Component("llm", layers=("model.vlm.language_model.layers",), norm=("model.vlm.language_model.norm",)),
        Component("expert", layers=("model.dit.layers",), norm=("model.dit.norm",), sequence="suffix"),
    ),
    extras={"projector": ("model.vlm.multi_modal_projector",), "action_out": ("action_out_proj",)},
    layout=lambda model, batch: native_pi_layout(model, batch),
)

register_adapter(f"{_T}.pi0.modeling_pi0.PI0ForConditionalGeneration", NATIVE_PI)
register_adapter(f"{_T}.pi05.modeling_pi05.PI05ForConditionalGeneration", NATIVE_PI)
