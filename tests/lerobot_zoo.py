"""Tiny stand-ins for LeRobot's pi0 / pi0.5 that call their layers the way LeRobot 0.4.4 does.

LeRobot is never installed in CI, so these models reproduce the three calling conventions
that matter to capture (see ``lerobot/policies/pi0/modeling_pi0.py``):

- ``predict_action_chunk``: the prefix runs through ``language_model.forward`` after the
  attention implementation is flipped to ``"eager"`` at call time; each denoising step runs
  the expert's ``GemmaModel.forward`` on the suffix against the prefix keys/values;
- the training ``forward``: one joint prefix + expert pass that never calls a decoder layer
  module, only its pieces (``input_layernorm``, ``q/k/v_proj``, ``o_proj``,
  ``post_attention_layernorm``, ``mlp``), with ``modeling_gemma.eager_attention_forward``
  called as a free function on the joint sequence, handed the decoder layer's attention;
- missing cameras are padded *after* the present ones (images of -1, mask 0).

The module tree has LeRobot's paths (``model.paligemma_with_expert.paligemma…``,
``…gemma_expert.model.layers``), so the real adapters are what the tests exercise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from transformers import (
    DynamicCache,
    GemmaConfig,
    GemmaForCausalLM,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    SiglipVisionConfig,
)
from transformers.models.gemma import modeling_gemma

from policylens.models._hf_compat import cache_kwargs

LANG_TOKENS, LANG_MASK, STATE = (
    "observation.language.tokens",
    "observation.language.attention_mask",
    "observation.state",
)
MASK_VALUE = -2.3819763e38  # LeRobot's OPENPI_ATTENTION_MASK_VALUE


@dataclass
class Pi0LikeConfig:
    image_features: dict = field(
        default_factory=lambda: {"observation.images.base": None, "observation.images.wrist": None}
    )
    chunk_size: int = 4
    state_dim: int = 6
    max_state_dim: int = 6
    max_action_dim: int = 5
    num_inference_steps: int = 3
    image_size: int = 28
    patch_size: int = 14


def _gemma(width: int) -> dict:
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "vocab_size": 64,
    }


def make_att_2d_masks(pad_masks: Tensor, att_masks: Tensor) -> Tensor:
    # LeRobot's rule: a token sees every token whose cumulative att block is <= its own
    cumsum = torch.cumsum(att_masks, dim=1)
    return (cumsum[:, None, :] <= cumsum[:, :, None]) & (pad_masks[:, None, :] & pad_masks[:, :, None])


def _mask_4d(att_2d: Tensor) -> Tensor:
    return torch.where(att_2d[:, None], 0.0, MASK_VALUE)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: Pi0LikeConfig) -> None:
        super().__init__()
        vision = SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
        )
        pg = PaliGemmaConfig(
            vision_config=vision.to_dict(),
            text_config=GemmaConfig(**_gemma(32)).to_dict(),
            image_token_id=63,
            projection_dim=32,
        )
        pg._attn_implementation = "sdpa"
        self.paligemma = PaliGemmaForConditionalGeneration(pg)
        expert = GemmaConfig(**_gemma(16))
        expert._attn_implementation = "sdpa"
        self.gemma_expert = GemmaForCausalLM(expert)
        self.gemma_expert.model.embed_tokens = None

    @property
    def language_model(self) -> nn.Module:
        return self.paligemma.model.language_model

    def joint_layer(self, i: int, embeds: list[Tensor], mask: Tensor, positions: Tensor) -> list[Tensor]:
        """LeRobot's ``compute_layer_complete``: layer pieces called directly, free-function attention."""
        models = [self.language_model, self.gemma_expert.model]
        qs, ks, vs = [], [], []
        for model, h in zip(models, embeds, strict=True):
            layer = model.layers[i]
            h = layer.input_layernorm(h)
            shape = (*h.shape[:-1], -1, layer.self_attn.head_dim)
            qs.append(layer.self_attn.q_proj(h).view(shape).transpose(1, 2))
            ks.append(layer.self_attn.k_proj(h).view(shape).transpose(1, 2))
            vs.append(layer.self_attn.v_proj(h).view(shape).transpose(1, 2))
        q, k, v = torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2)
        cos, sin = self.language_model.rotary_emb(torch.zeros(q.shape[0], q.shape[2], q.shape[-1]), positions)
        q, k = modeling_gemma.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        attn = self.language_model.layers[i].self_attn
        out, _ = modeling_gemma.eager_attention_forward(attn, q, k, v, mask, attn.scaling)
        out = out.reshape(q.shape[0], -1, q.shape[1] * q.shape[-1])
        result, start = [], 0
        for model, h in zip(models, embeds, strict=True):
            layer, end = model.layers[i], start + h.shape[1]
            x = layer.self_attn.o_proj(out[:, start:end]) + h
            result.append(x + layer.mlp(layer.post_attention_layernorm(x)))
            start = end
        return result

    def forward(self, mask: Tensor, positions: Tensor, embeds: list[Tensor | None], kv=None):
        prefix, suffix = embeds
        if suffix is None:  # prefix pass, eager flipped at call time as LeRobot does
            self.language_model.config._attn_implementation = "eager"
            cache = DynamicCache()
            self.language_model(
                inputs_embeds=prefix,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **cache_kwargs(self.language_model, cache),
            )
            return None, [(layer.keys, layer.values) for layer in cache.layers]
        if prefix is None:  # one denoising step against the prefix keys/values
            self.gemma_expert.model.config._attn_implementation = "eager"
            cache = DynamicCache()
            for j, (k, v) in enumerate(kv):
                cache.update(k, v, j)
            expert = self.gemma_expert.model
            out = expert(
                inputs_embeds=suffix,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **cache_kwargs(expert, cache),
            ).last_hidden_state
            return out, None
        for i in range(len(self.language_model.layers)):  # joint training pass
            embeds = self.joint_layer(i, embeds, mask, positions)
        prefix_out = self.language_model.norm(embeds[0])  # LeRobot normalises both streams
        return self.gemma_expert.model.norm(embeds[1]), prefix_out


class Pi0LikeModel(nn.Module):
    def __init__(self, cfg: Pi0LikeConfig) -> None:
        super().__init__()
        self.config = cfg
        self.paligemma_with_expert = PaliGemmaWithExpert(cfg)
        self.state_proj = nn.Linear(cfg.max_state_dim, 16)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, 16)
        self.action_out_proj = nn.Linear(16, cfg.max_action_dim)

    def embed_prefix(self, images, img_masks, lang_tokens, lang_masks):
        pg = self.paligemma_with_expert.paligemma
        embs, pads = [], []
        for img, m in zip(images, img_masks, strict=True):
            e = pg.model.multi_modal_projector(pg.model.vision_tower(pixel_values=img).last_hidden_state)
            embs.append(e)
            pads.append(m[:, None].expand(e.shape[0], e.shape[1]))
        lang = self.paligemma_with_expert.language_model.embed_tokens(lang_tokens)
        embs.append(lang)
        pads.append(lang_masks)
        pad = torch.cat(pads, 1)
        return torch.cat(embs, 1), pad, torch.zeros_like(pad)

    def embed_suffix(self, state, x_t, t):
        actions = self.action_in_proj(x_t) + t[:, None, None]
        embs = torch.cat([self.state_proj(state)[:, None], actions], 1)
        b, n = embs.shape[:2]
        att = torch.zeros(b, n, dtype=torch.bool)
        att[:, :2] = True  # state starts a block, the actions another
        return embs, torch.ones(b, n, dtype=torch.bool), att

    def forward(self, images, img_masks, lang_tokens, lang_masks, state, actions, noise, time):
        x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * actions
        pre, pre_pad, pre_att = self.embed_prefix(images, img_masks, lang_tokens, lang_masks)
        suf, suf_pad, suf_att = self.embed_suffix(state, x_t, time)
        pad, att = torch.cat([pre_pad, suf_pad], 1), torch.cat([pre_att, suf_att], 1)
        positions = torch.cumsum(pad, 1) - 1
        out, _ = self.paligemma_with_expert(_mask_4d(make_att_2d_masks(pad, att)), positions, [pre, suf])
        v_t = self.action_out_proj(out[:, -self.config.chunk_size :])
        return ((noise - actions - v_t) ** 2).mean()

    def sample_actions(self, images, img_masks, lang_tokens, lang_masks, state, noise=None, num_steps=None):
        if noise is None:
            noise = torch.normal(0.0, 1.0, (state.shape[0], self.config.chunk_size, self.config.max_action_dim))
        num_steps = num_steps or self.config.num_inference_steps
        pre, pre_pad, pre_att = self.embed_prefix(images, img_masks, lang_tokens, lang_masks)
        positions = torch.cumsum(pre_pad, 1) - 1
        _, kv = self.paligemma_with_expert(_mask_4d(make_att_2d_masks(pre_pad, pre_att)), positions, [pre, None])
        x, dt = noise, -1.0 / num_steps
        for step in range(num_steps):
            t = torch.full((x.shape[0],), 1.0 + step * dt)
            suf, suf_pad, suf_att = self.embed_suffix(state, x, t)
            b, s, p = suf.shape[0], suf.shape[1], pre_pad.shape[1]
            full = torch.cat([pre_pad[:, None].expand(b, s, p), make_att_2d_masks(suf_pad, suf_att)], 2)
            pos = pre_pad.sum(-1)[:, None] + torch.cumsum(suf_pad, 1) - 1
            out, _ = self.paligemma_with_expert(_mask_4d(full), pos, [None, suf], kv=kv)
            x = x + dt * self.action_out_proj(out[:, -self.config.chunk_size :])
        return x


class Pi0LikePolicy(nn.Module):
    """LeRobot's ``PI0Policy`` surface: ``config.image_features`` / ``input_features``,
    ``_preprocess_images``, ``prepare_state``, ``predict_action_chunk(batch)`` and the training
    ``forward(batch)`` over a pre-processed LeRobot batch."""

    def __init__(self, config: Pi0LikeConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = config or Pi0LikeConfig()
        self.config.input_features = {STATE: SimpleNamespace(shape=(self.config.state_dim,))}
        self.model = Pi0LikeModel(self.config).eval()

    def _preprocess_images(self, batch):
        present = [k for k in self.config.image_features if k in batch]
        images = [batch[k] * 2 - 1 for k in present]
        masks = [torch.ones(images[0].shape[0], dtype=torch.bool) for _ in present]
        for _ in range(len(self.config.image_features) - len(present)):  # padding after the present cameras
            images.append(torch.ones_like(images[0]) * -1)
            masks.append(torch.zeros_like(masks[0]))
        return images, masks

    def prepare_state(self, batch):
        state = batch[STATE]
        return nn.functional.pad(state, (0, self.config.max_state_dim - state.shape[-1]))

    def _inputs(self, batch):
        images, masks = self._preprocess_images(batch)
        return images, masks, batch[LANG_TOKENS], batch[LANG_MASK].bool(), self.prepare_state(batch)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict, noise: Tensor | None = None) -> Tensor:
        return self.model.sample_actions(*self._inputs(batch), noise=noise)

    def forward(self, batch: dict, noise: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        actions = batch["action"]
        noise = noise if noise is not None else torch.randn_like(actions)
        time = time if time is not None else torch.full((actions.shape[0],), 0.5)
        return self.model(*self._inputs(batch), actions, noise, time)


def _resize_with_pad(images: Tensor, size: int) -> Tensor:
    """pi0's resize: keep the aspect ratio, centre the content, black bars (0 in [0, 1])."""
    h, w = images.shape[-2:]
    ratio = max(w / size, h / size)
    new_h, new_w = int(h / ratio), int(w / ratio)
    small = nn.functional.interpolate(images, size=(new_h, new_w), mode="bilinear", antialias=True)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return nn.functional.pad(small, (left, size - new_w - left, top, size - new_h - top))


def byte_preprocessor(policy: Pi0LikePolicy, max_tokens: int = 8):
    """A stand-in for LeRobot's pre-processor pipeline and pi0's image resize: resize with pad, tokenise the task
    (bytes, right-padded to ``max_tokens``), pass the state. Called on a raw frame dict."""
    size = policy.config.image_size

    def run(frame: dict) -> dict:
        out = {}
        for key, value in frame.items():
            if key.startswith("observation.images."):
                out[key] = _resize_with_pad(value, size)
        tokens = torch.zeros(len(frame["task"]), max_tokens, dtype=torch.long)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        for i, text in enumerate(frame["task"]):
            ids = [2 + b % 58 for b in text.encode()][:max_tokens]
            tokens[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), True
        out.update({LANG_TOKENS: tokens, LANG_MASK: mask, STATE: frame[STATE], "task": frame["task"]})
        return out

    return run


def pi0_like_batch(policy: Pi0LikePolicy, batch_size: int = 2, cameras: list[str] | None = None, seed: int = 0):
    """A pre-processed LeRobot-style batch: images in [0, 1], tokens, mask (right padding), state, action."""
    g = torch.Generator().manual_seed(seed)
    cfg = policy.config
    cameras = list(cfg.image_features) if cameras is None else cameras
    size = (batch_size, 3, cfg.image_size, cfg.image_size)
    batch = {cam: torch.rand(size, generator=g) for cam in cameras}
    tokens = torch.randint(2, 60, (batch_size, 6), generator=g)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[1:, -2:] = False
    batch.update(
        {
            LANG_TOKENS: tokens,
            LANG_MASK: mask,
            STATE: torch.randn(batch_size, cfg.state_dim, generator=g),
            "action": torch.randn(batch_size, cfg.chunk_size, cfg.max_action_dim, generator=g),
        }
    )
    return batch
