"""Adapters for LeRobot's pi0, pi0.5 and SmolVLA policies.

LeRobot pins ``torch<2.11`` and ``transformers<5``, so it is never imported here: the
adapters are registered by class name and only match when the user's environment has
LeRobot and passes one of its policies (``tests/lerobot_zoo.py`` holds stand-ins with the
same module tree and calling conventions, so CI covers them without LeRobot).

How LeRobot 0.4.4 runs these models, and what follows for the taps:

- SmolVLA calls each decoder layer's pieces (``input_layernorm``, ``q/k/v_proj``,
  ``o_proj``, ``post_attention_layernorm``, ``mlp``) on every path; pi0 / pi0.5 do so in
  the joint prefix + expert training pass. The decoder and expert components are therefore
  ``calls="pieces"``: a layer's output is read at the next layer's ``input_layernorm`` input
  (the final norm's input for the last layer), the same tensor the layer would return.
- pi0 / pi0.5 attention: the prefix pass and each denoising step run the attention modules
  with the eager implementation (switched on at call time); the joint training pass calls
  ``modeling_gemma.eager_attention_forward`` as a free function on the joint sequence,
  handing it the *decoder* layer's attention. Both are routed (``policylens.tap``), so
  ``llm.layers.{i}.attn.probs`` is the joint map there (the expert's rows are the suffix
  rows) and ``expert.layers.{i}.attn.probs`` fires only in the denoising steps.
- SmolVLA computes attention in its ``SmolVLMWithExpertModel`` (``forward_attn_layer`` /
  ``forward_cross_attn_layer`` hand the query / key / value of a layer to its
  ``eager_attention_forward``), so its ``llm`` and ``expert`` components take the ``"smolvla"``
  attention kind (``policylens.tap``): ``{component}.layers.{i}.attn.probs`` are the rows of that
  layer's queries, over the keys of the call — llm: the prefix over the prefix (the joint training
  pass's self-attention layers: over prefix + suffix); expert: the suffix over prefix + suffix in
  self-attention layers, over the prefix in cross-attention layers, once per denoising step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..tap import Adapter, Component, Layout, PatchGrid, TokenSpans, pi0_layout, register_adapter, suffix_spans

__all__ = ["lerobot_adapter", "lerobot_layout", "pi05_state_tokens"]

LANG_MASK_KEY = "observation.language.attention_mask"
LANG_TOKENS_KEY = "observation.language.tokens"
STATE_MARK = re.compile(r"State\s*:\s*")  # decoders may space out punctuation: "State : 12"
_PI0_ROOT = "model.paligemma_with_expert."
_SMOL_ROOT = "model.vlm_with_expert."


def _pi0_tokens_per_image(model: nn.Module) -> int:
    vision = model.model.paligemma_with_expert.paligemma.config.vision_config
    return (vision.image_size // vision.patch_size) ** 2


def _smolvla_layout(model: nn.Module, batch: Mapping[str, Tensor], lang: Tensor) -> Layout:
    """SmolVLA's prefix ``[image blocks, language, state, padding]`` as ``embed_prefix`` builds it.

    Image blocks: the cameras present (``config.image_features`` order), then padding images
    (mask 0) for at most ``config.empty_cameras`` missing cameras — the rest are dropped.
    A block is ``[start tokens, image tokens, end token]`` with ``add_image_special_tokens``
    (special tokens always valid), else the image tokens alone; image tokens per block are
    ``(H/patch · W/patch) / scale_factor²`` of the image after ``resize_imgs_with_padding``
    (or as it comes). ``prefix_length`` pads the end (never truncates). A sample whose
    ``{camera}_padding_mask`` is 0 has that camera's tokens invalid.
    """
    cfg, core = model.config, model.model
    vlm = core.vlm_with_expert.vlm.config
    cameras = list(cfg.image_features)
    present = [c for c in cameras if c in batch]
    padded = [c for c in cameras if c not in batch][: max(0, int(cfg.empty_cameras))]
    if cfg.resize_imgs_with_padding is not None:
        width, height = cfg.resize_imgs_with_padding
    else:
        height, width = batch[present[0]].shape[-2:]
    patch = vlm.vision_config.patch_size
    per_image = (height // patch) * (width // patch) // vlm.scale_factor**2
    special = bool(getattr(cfg, "add_image_special_tokens", False))
    before = int(core.global_image_start_token.numel()) if special else 0
    after = int(core.image_end_token.numel()) if special else 0
    b, n_lang = lang.shape
    block = before + per_image + after
    n_img = block * (len(present) + len(padded))
    total = max(n_img + n_lang + 1, int(getattr(cfg, "prefix_length", 0) or 0))
    masks = {name: torch.zeros(b, total, dtype=torch.bool) for name in ("text", "state", "valid", "image_special")}
    for k, cam in enumerate(present + padded):
        start = k * block
        seen = torch.zeros(b, dtype=torch.bool) if cam in padded else torch.ones(b, dtype=torch.bool)
        if f"{cam}_padding_mask" in batch:
            seen &= batch[f"{cam}_padding_mask"].bool().reshape(b)
        image = torch.zeros(b, total, dtype=torch.bool)
        image[:, start + before : start + before + per_image] = seen[:, None]
        masks[f"image[{cam}]"] = image
        masks["image_special"][:, start : start + before] = True
        masks["image_special"][:, start + before + per_image : start + block] = True
    masks["valid"] = masks["image_special"].clone()
    for cam in present + padded:
        masks["valid"] |= masks[f"image[{cam}]"]
    masks["text"][:, n_img : n_img + n_lang] = lang
    masks["state"][:, n_img + n_lang] = True
    masks["valid"] |= masks["text"] | masks["state"]
    for cam in cameras:  # dropped cameras: empty spans
        masks.setdefault(f"image[{cam}]", torch.zeros(b, total, dtype=torch.bool))
    grid = PatchGrid(height // patch // vlm.scale_factor, width // patch // vlm.scale_factor)
    prefix = TokenSpans(masks, tuple(cameras), grids=dict.fromkeys(present, grid))
    suffix = suffix_spans(b, 0, int(cfg.chunk_size))
    return Layout({"prefix": prefix, "suffix": suffix})


def pi05_state_tokens(tokens: Tensor, mask: Tensor, tokenizer) -> Tensor:
    """``(B, L)`` bool: the language tokens that spell the discretised state in pi0.5's prompt
    ``"Task: …, State: 12 200 …;\nAction: "``, found by decoding with ``tokenizer`` (anything
    with ``decode(list[int]) -> str``). A token belongs to the state when its characters (less
    the whitespace a decoder puts before them) fall between ``"State:"`` and the ``";"`` after it."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    for b in range(tokens.shape[0]):
        where = mask[b].bool().nonzero().flatten().tolist()
        ids = tokens[b, where].tolist()
        text = tokenizer.decode(ids)
        found = STATE_MARK.search(text)
        if found is None:
            raise ValueError(
                f"pi05_state_tokens: sample {b}'s prompt has no 'State:' ({text[:80]!r}...); pi0.5's pre-processor "
                "writes 'Task: ..., State: ...;' — pass the batch after the policy's own pre-processor"
            )
        start = found.end()
        stop = text.find(";", start)
        stop = len(text) if stop < 0 else stop
        ends = [len(tokenizer.decode(ids[: k + 1])) for k in range(len(ids))]
        for k, pos in enumerate(where):
            piece = text[ends[k - 1] if k else 0 : ends[k]]  # this token's characters, after any space
            first = ends[k] - len(piece.lstrip())
            out[b, pos] = piece.strip() != "" and first < stop and ends[k] > start
    return out


def lerobot_layout(variant: str, model: nn.Module, batch: Mapping[str, Tensor], tokenizer=None) -> Layout:
    """Token layout of a pre-processed LeRobot batch, read from the policy's config and the batch.

    pi0 / pi0.5 place the cameras present in the batch first, in ``config.image_features``
    order, then one padding block per missing camera (mask 0); tokens per image come from
    the vision config. Missing cameras get empty ``image[...]`` spans. SmolVLA: see
    :func:`_smolvla_layout` (padding images capped by ``empty_cameras``, image special tokens,
    ``resize_imgs_with_padding``, ``prefix_length``). pi0.5 writes the state
    into the prompt: with ``tokenizer`` (the pre-processor's; :class:`LeRobotTeacher` passes
    it) those tokens form the ``state`` span, without it the layout refuses to guess.
    """
    if LANG_MASK_KEY not in batch:
        raise KeyError(f"lerobot_layout: the batch lacks {LANG_MASK_KEY!r}; run the policy's preprocessor first")
    config = model.config
    lang = batch[LANG_MASK_KEY].bool()
    cameras = list(getattr(config, "image_features", {}) or {})
    if not cameras:
        raise ValueError("lerobot_layout: the policy config lists no image_features")
    present = [c for c in cameras if c in batch]
    if not present:
        raise ValueError(f"lerobot_layout: the batch holds none of the policy's cameras {cameras}")
    if variant == "smolvla":
        return _smolvla_layout(model, batch, lang)
    order = present + [c for c in cameras if c not in batch]  # LeRobot pads missing cameras after the present ones
    masks = torch.tensor([[c in batch for c in order]] * lang.shape[0])
    per_image = _pi0_tokens_per_image(model)
    chunk = int(getattr(config, "chunk_size", 50))
    text_state = None
    if variant == "pi05":
        if tokenizer is None:
            raise ValueError(
                "lerobot_layout('pi05', ...): pi0.5 writes the discretised state into the prompt, so the state "
                "span needs the pre-processor's tokenizer: pass tokenizer=... (LeRobotTeacher passes its own)."
            )
        text_state = pi05_state_tokens(batch[LANG_TOKENS_KEY], lang, tokenizer)
    layout = pi0_layout(variant, masks, per_image, lang, chunk, cameras=order, text_state=text_state)
    vision = model.model.paligemma_with_expert.paligemma.config.vision_config
    side = vision.image_size // vision.patch_size
    layout["prefix"].grids.update(dict.fromkeys(present, PatchGrid(side, side)))
    return layout


def lerobot_adapter(variant: str) -> Adapter:
    """The adapter of LeRobot's ``pi0``, ``pi05`` or ``smolvla`` policy (see the module docstring)."""
    if variant in ("pi0", "pi05"):
        r = _PI0_ROOT
        components = (
            Component(
                "vision",
                layers=(
                    f"{r}paligemma.model.vision_tower.vision_model.encoder.layers",
                    f"{r}paligemma.vision_tower.vision_model.encoder.layers",
                    f"{r}paligemma.model.vision_tower.encoder.layers",
                ),
                sequence="vision",
            ),
            Component(
                "llm",
                layers=(f"{r}paligemma.model.language_model.layers", f"{r}paligemma.language_model.model.layers"),
                norm=(f"{r}paligemma.model.language_model.norm", f"{r}paligemma.language_model.model.norm"),
                calls="pieces",
            ),
            Component(
                "expert",
                layers=(f"{r}gemma_expert.model.layers",),
                norm=(f"{r}gemma_expert.model.norm",),
                sequence="suffix",
                calls="pieces",
            ),
        )
    elif variant == "smolvla":
        r = _SMOL_ROOT
        components = (
            Component("vision", layers=(f"{r}vlm.model.vision_model.encoder.layers",), sequence="vision"),
            Component(
                "llm",
                layers=(f"{r}vlm.model.text_model.layers",),
                norm=(f"{r}vlm.model.text_model.norm",),
                attention="smolvla",
                calls="pieces",
            ),
            Component(
                "expert",
                layers=(f"{r}lm_expert.layers",),
                norm=(f"{r}lm_expert.norm",),
                attention="smolvla",
                sequence="suffix",
                calls="pieces",
            ),
        )
    else:
        raise ValueError(f"lerobot_adapter: variant={variant!r} is not one of ['pi0', 'pi05', 'smolvla']")
    return Adapter(
        name=f"lerobot_{variant}",
        components=components,
        layout=lambda model, batch: lerobot_layout(variant, model, batch),
    )


register_adapter("lerobot.policies.pi0.modeling_pi0.PI0Policy", lambda _m: lerobot_adapter("pi0"))
register_adapter("lerobot.policies.pi05.modeling_pi05.PI05Policy", lambda _m: lerobot_adapter("pi05"))
register_adapter("lerobot.policies.smolvla.modeling_smolvla.SmolVLAPolicy", lambda _m: lerobot_adapter("smolvla"))
