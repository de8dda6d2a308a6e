"""A tiny stand-in for LeRobot 0.4.4's SmolVLA that computes attention the way its ``SmolVLMWithExpertModel``
does (``lerobot/policies/smolvla/smolvlm_with_expert.py``); CI has no LeRobot.

What capture depends on is kept: the module tree (``model.vlm_with_expert.vlm.model.text_model.layers``,
``…vision_model.encoder.layers``, ``…lm_expert.layers``, a transformers SmolVLM and a Llama expert), and the
calling convention:

- every layer's pieces are called directly, never the layer module;
- per layer, ``forward_attn_layer`` projects the streams present (prefix through the LLM's layer, suffix through
  the expert's) and makes one attention call over their concatenation; in ``attention_mode="cross_attn"`` every
  layer but each ``self_attn_every_n_layers``-th runs ``forward_cross_attn_layer`` instead: the prefix alone
  (when given), then the expert's queries against the prefix keys / values re-projected by the expert's k / v;
- the attention function comes from ``get_attention_interface()`` with the signature ``(mask, batch_size,
  head_dim, q, k, v)``, q / k / v ``(B, T, heads, d)``, a bool mask ``(B, Tq, Tk)``;
- ``sample_actions``: the prefix pass fills a key / value cache (``fill_kv_cache=True``, always
  ``forward_attn_layer``), each denoising step runs the suffix against it; the training ``forward`` is one pass
  over prefix + suffix without a cache;
- with ``num_expert_layers`` < the LLM's, expert layers pair with every ``n_llm // n_expert``-th LLM layer.

``attention="sdpa"`` makes ``get_attention_interface`` return a ``scaled_dot_product_attention`` function (LeRobot
0.4.4 always returns its eager one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import Tensor, nn
from transformers import AutoModel, SmolVLMConfig, SmolVLMForConditionalGeneration

from lerobot_zoo import LANG_MASK, LANG_TOKENS, STATE, make_att_2d_masks

TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}


@dataclass
class SmolVLALikeConfig:
    image_features: dict = field(
        default_factory=lambda: dict.fromkeys(["observation.images.top", "observation.images.wrist"])
    )
    chunk_size: int = 4
    state_dim: int = 6
    max_state_dim: int = 6
    max_action_dim: int = 5
    num_steps: int = 3
    num_vlm_layers: int = 4
    num_expert_layers: int = -1
    attention_mode: str = "cross_attn"
    self_attn_every_n_layers: int = 2
    attention: str = "eager"
    image_size: int = 32  # patch 8, scale factor 2: 2 x 2 = 4 tokens per image
    empty_cameras: int = 0  # what policylens' SmolVLA layout reads
    resize_imgs_with_padding: tuple | None = None
    add_image_special_tokens: bool = False
    prefix_length: int = -1


def apply_rope(x: Tensor, positions: Tensor, max_wavelength: float = 10_000) -> Tensor:
    """RoPE on ``x`` ``(B, T, H, d)`` at ``positions`` ``(B, T)``, halves rotated as LeRobot's ``apply_rope``."""
    half = x.shape[-1] // 2
    timescale = max_wavelength ** ((2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32))
    radians = (positions[..., None].float() / timescale)[..., None, :]  # (B, T, 1, d/2)
    x1, x2 = x.float().split(half, dim=-1)
    return torch.cat([x1 * radians.cos() - x2 * radians.sin(), x2 * radians.cos() + x1 * radians.sin()], -1).to(x.dtype)


class SmolVLMWithExpertLike(nn.Module):
    def __init__(self, cfg: SmolVLALikeConfig) -> None:
        super().__init__()
        text = {"model_type": "llama", **TEXT, "num_hidden_layers": cfg.num_vlm_layers, "vocab_size": 64}
        vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
        config = SmolVLMConfig(
            text_config=text,
            vision_config={**vision, "image_size": cfg.image_size, "patch_size": 8},
            scale_factor=2,
            image_token_id=63,
        )
        self.vlm = SmolVLMForConditionalGeneration(config)
        expert = copy.deepcopy(config.text_config)
        expert.hidden_size, expert.intermediate_size = 24, 48
        if cfg.num_expert_layers > 0:
            expert.num_hidden_layers = cfg.num_expert_layers
        self.lm_expert = AutoModel.from_config(expert)
        self.lm_expert.embed_tokens = None
        self.num_vlm_layers, self.num_expert_layers = cfg.num_vlm_layers, len(self.lm_expert.layers)
        self.attention_mode, self.self_attn_every_n_layers = cfg.attention_mode, cfg.self_attn_every_n_layers
        self.num_attention_heads, self.num_key_value_heads = TEXT["num_attention_heads"], TEXT["num_key_value_heads"]
        self.attention, self.config = cfg.attention, config
        kv = TEXT["num_key_value_heads"] * TEXT["head_dim"]
        for i, layer in enumerate(self.lm_expert.layers):  # cross-attention layers read the LLM's keys / values
            if "cross" in cfg.attention_mode and not (
                cfg.self_attn_every_n_layers > 0 and i % cfg.self_attn_every_n_layers == 0
            ):
                layer.self_attn.k_proj, layer.self_attn.v_proj = (
                    nn.Linear(kv, kv, bias=False),
                    nn.Linear(kv, kv, bias=False),
                )

    def get_vlm_model(self) -> nn.Module:
        return self.vlm.model

    def embed_image(self, image: Tensor) -> Tensor:
        hidden = self.get_vlm_model().vision_model(pixel_values=image, patch_attention_mask=None).last_hidden_state
        return self.get_vlm_model().connector(hidden)

    def embed_language_tokens(self, tokens: Tensor) -> Tensor:
        return self.get_vlm_model().text_model.get_input_embeddings()(tokens)

    def get_model_layers(self, models: list) -> list:
        every = self.num_vlm_layers // self.num_expert_layers
        expert = [
            None if every > 0 and i > 0 and i % every != 0 else models[1].layers[i // every if every > 0 else i]
            for i in range(self.num_vlm_layers)
        ]
        return [list(models[0].layers), expert]

    @staticmethod
    def _qkv(layer: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = layer.input_layernorm(hidden)
        shape = (*h.shape[:-1], -1, layer.self_attn.head_dim)  # (B, T, heads, d)
        a = layer.self_attn
        return a.q_proj(h).view(shape), a.k_proj(h).view(shape), a.v_proj(h).view(shape)

    def forward_attn_layer(
        self,
        model_layers,
        inputs_embeds,
        layer_idx,
        position_ids,
        attention_mask,
        batch_size,
        head_dim,
        use_cache=True,
        fill_kv_cache=True,
        past_key_values=None,
    ):
        qkv = [
            self._qkv(model_layers[i][layer_idx], h)
            for i, h in enumerate(inputs_embeds)
            if h is not None and model_layers[i][layer_idx] is not None
        ]
        q, k, v = (torch.cat(parts, dim=1) for parts in zip(*qkv, strict=True))
        n = q.shape[1]
        if n < position_ids.shape[1]:
            position_ids, attention_mask = position_ids[:, :n], attention_mask[:, :n, :n]
        q, k = apply_rope(q, position_ids), apply_rope(k, position_ids)
        if use_cache and past_key_values is None:
            past_key_values = {}
        if use_cache and fill_kv_cache:
            past_key_values[layer_idx] = {"key_states": k, "value_states": v}
        elif use_cache:
            k = torch.cat([past_key_values[layer_idx]["key_states"], k], dim=1)
            v = torch.cat([past_key_values[layer_idx]["value_states"], v], dim=1)
        out = self.get_attention_interface()(attention_mask, batch_size, head_dim, q, k, v)
        return [out], past_key_values

    def forward_cross_attn_layer(
        self,
        model_layers,
        inputs_embeds,
        layer_idx,
        position_ids,
        attention_mask,
        batch_size,
        head_dim,
        use_cache=True,
        fill_kv_cache=True,
        past_key_values=None,
    ):
        attention, outs = self.get_attention_interface(), []
        if len(inputs_embeds) == 2 and not past_key_values:  # the prefix attends to itself
            n = inputs_embeds[0].shape[1]
            position, expert_position = position_ids[:, :n], position_ids[:, n:]
            q, k, v = self._qkv(model_layers[0][layer_idx], inputs_embeds[0])
            q, k = apply_rope(q, position), apply_rope(k, position)
            outs.append(attention(attention_mask[:, :n, :n], batch_size, head_dim, q, k, v))
        else:
            expert_position = position_ids
        if use_cache and past_key_values is None:
            past_key_values = {}
        if use_cache and fill_kv_cache:
            past_key_values[layer_idx] = {"key_states": k, "value_states": v}
        elif use_cache:
            k, v = past_key_values[layer_idx]["key_states"], past_key_values[layer_idx]["value_states"]
        layer = model_layers[1][layer_idx]
        if layer is None:
            outs.append(None)
            return outs, past_key_values
        h = layer.input_layernorm(inputs_embeds[1])
        shape = (*h.shape[:-1], -1, layer.self_attn.head_dim)
        q = layer.self_attn.q_proj(h).view(shape)
        ek = layer.self_attn.k_proj(k.reshape(*k.shape[:2], -1)).view(*k.shape[:2], -1, layer.self_attn.head_dim)
        ev = layer.self_attn.v_proj(v.reshape(*v.shape[:2], -1)).view(*v.shape[:2], -1, layer.self_attn.head_dim)
        expert_position = expert_position - expert_position.min(dim=1, keepdim=True).values  # from 0
        mask = attention_mask[:, -h.shape[1] :, : ek.shape[1]]
        outs.append(attention(mask, batch_size, head_dim, apply_rope(q, expert_position), ek, ev))
        return outs, past_key_values

    def forward(self, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, fill_kv_cache):
        models = [self.get_vlm_model().text_model, self.lm_expert]
        model_layers = self.get_model_layers(models)
        batch_size = next(h for h in inputs_embeds if h is not None).shape[0]
        head_dim = TEXT["head_dim"]
        for idx in range(self.num_vlm_layers):
            every = self.self_attn_every_n_layers
            joint = fill_kv_cache or "cross" not in self.attention_mode or (every > 0 and idx % every == 0)
            method = self.forward_attn_layer if joint else self.forward_cross_attn_layer
            outs, past_key_values = method(
                model_layers,
                inputs_embeds,
                idx,
                position_ids,
                attention_mask,
                batch_size,
                head_dim,
                use_cache=use_cache,
                fill_kv_cache=fill_kv_cache,
                past_key_values=past_key_values,
            )
            result, start = [], 0
            for i, hidden in enumerate(inputs_embeds):
                layer, out = model_layers[i][idx], outs[i] if i < len(outs) else outs[0]
                if hidden is None or layer is None:
                    result.append(hidden)
                    continue
                end = start + hidden.shape[1]
                x = layer.self_attn.o_proj(out[:, start:end]) + hidden
                result.append(x + layer.mlp(layer.post_attention_layernorm(x)))
                start = end if len(outs) == 1 else 0
            inputs_embeds = result
        return [None if h is None else m.norm(h) for m, h in zip(models, inputs_embeds, strict=True)], past_key_values

    def get_attention_interface(self):
        return self.eager_attention_forward if self.attention == "eager" else self.sdpa_attention_forward

    def eager_attention_forward(self, attention_mask, batch_size, head_dim, query, key, value):
        groups = self.num_attention_heads // self.num_key_value_heads
        key, value = (x.repeat_interleave(groups, dim=2).transpose(1, 2).float() for x in (key, value))  # (B, H, Tk, d)
        scores = torch.matmul(query.float().transpose(1, 2), key.transpose(2, 3)) * head_dim**-0.5
        scores = torch.where(attention_mask[:, None], scores, torch.finfo(torch.float32).min)
        out = torch.matmul(torch.softmax(scores, dim=-1), value)  # (B, H, Tq, d)
        return out.transpose(1, 2).reshape(batch_size, -1, self.num_attention_heads * head_dim)

    def sdpa_attention_forward(self, attention_mask, batch_size, head_dim, query, key, value):
        groups = self.num_attention_heads // self.num_key_value_heads
        q = query.transpose(1, 2)
        k, v = (x.repeat_interleave(groups, dim=2).transpose(1, 2) for x in (key, value))
        mask = torch.where(attention_mask[:, None], 0.0, torch.finfo(torch.float32).min)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(batch_size, -1, self.num_attention_heads * head_dim)


class SmolVLALikeModel(nn.Module):
    def __init__(self, cfg: SmolVLALikeConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vlm_with_expert = SmolVLMWithExpertLike(cfg)
        self.state_proj = nn.Linear(cfg.max_state_dim, TEXT["hidden_size"])
        self.action_in_proj = nn.Linear(cfg.max_action_dim, 24)
        self.action_out_proj = nn.Linear(24, cfg.max_action_dim)

    def embed_prefix(self, images, img_masks, lang_tokens, lang_masks, state):
        embs, pads = [], []
        for img, mask in zip(images, img_masks, strict=True):
            emb = self.vlm_with_expert.embed_image(img)
            embs.append(emb)
            pads.append(mask[:, None].expand(*emb.shape[:2]))
        embs += [self.vlm_with_expert.embed_language_tokens(lang_tokens), self.state_proj(state)[:, None]]
        pads += [lang_masks, torch.ones(state.shape[0], 1, dtype=torch.bool)]
        pad = torch.cat(pads, 1)
        att = torch.zeros_like(pad)
        att[:, -1] = True  # the state starts a block of its own
        return torch.cat(embs, 1), pad, att

    def embed_suffix(self, x_t, t):
        emb = self.action_in_proj(x_t) + t[:, None, None]
        pad = torch.ones(emb.shape[:2], dtype=torch.bool)
        return emb, pad, torch.ones_like(pad)

    def forward(self, images, img_masks, lang_tokens, lang_masks, state, actions, noise, time):
        x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * actions
        prefix, prefix_pad, prefix_att = self.embed_prefix(images, img_masks, lang_tokens, lang_masks, state)
        suffix, suffix_pad, suffix_att = self.embed_suffix(x_t, time)
        pad, att = torch.cat([prefix_pad, suffix_pad], 1), torch.cat([prefix_att, suffix_att], 1)
        (_, out), _ = self.vlm_with_expert.forward(
            make_att_2d_masks(pad, att), torch.cumsum(pad, 1) - 1, None, [prefix, suffix], False, False
        )
        v_t = self.action_out_proj(out[:, -self.config.chunk_size :])
        return ((noise - actions - v_t) ** 2).mean()

    def sample_actions(self, images, img_masks, lang_tokens, lang_masks, state, noise=None):
        cfg = self.config
        if noise is None:
            noise = torch.normal(0.0, 1.0, (state.shape[0], cfg.chunk_size, cfg.max_action_dim))
        prefix, prefix_pad, prefix_att = self.embed_prefix(images, img_masks, lang_tokens, lang_masks, state)
        positions = torch.cumsum(prefix_pad, 1) - 1
        _, cache = self.vlm_with_expert.forward(
            make_att_2d_masks(prefix_pad, prefix_att), positions, None, [prefix, None], True, True
        )
        x, dt = noise, -1.0 / cfg.num_steps
        for step in range(cfg.num_steps):
            suffix, suffix_pad, suffix_att = self.embed_suffix(x, torch.full((x.shape[0],), 1.0 + step * dt))
            b, s, p = suffix.shape[0], suffix.shape[1], prefix_pad.shape[1]
            mask = torch.cat([prefix_pad[:, None].expand(b, s, p), make_att_2d_masks(suffix_pad, suffix_att)], 2)
            pos = prefix_pad.sum(-1)[:, None] + torch.cumsum(suffix_pad, 1) - 1
            (_, out), _ = self.vlm_with_expert.forward(mask, pos, cache, [None, suffix], True, False)
            x = x + dt * self.action_out_proj(out[:, -cfg.chunk_size :])
        return x


class SmolVLALikePolicy(nn.Module):
    """LeRobot's ``SmolVLAPolicy`` surface over a pre-processed batch: ``predict_action_chunk(batch, noise=)``,
    ``select_action(batch, noise=)`` and the training ``forward(batch)``; missing cameras are dropped
    (``empty_cameras=0``)."""

    def __init__(self, config: SmolVLALikeConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = config or SmolVLALikeConfig()
        self.config.input_features = {STATE: SimpleNamespace(shape=(self.config.state_dim,))}
        self.model = SmolVLALikeModel(self.config).eval()

    def _inputs(self, batch):
        images = [batch[k] * 2 - 1 for k in self.config.image_features if k in batch]
        masks = [torch.ones(images[0].shape[0], dtype=torch.bool) for _ in images]
        state = nn.functional.pad(batch[STATE], (0, self.config.max_state_dim - batch[STATE].shape[-1]))
        return images, masks, batch[LANG_TOKENS], batch[LANG_MASK].bool(), state

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict, noise: Tensor | None = None) -> Tensor:
        return self.model.sample_actions(*self._inputs(batch), noise=noise)

    @torch.no_grad()
    def select_action(self, batch: dict, noise: Tensor | None = None) -> Tensor:
        return self.predict_action_chunk(batch, noise)[:, 0]

    def forward(self, batch: dict, noise: Tensor | None = None, time: Tensor | None = None) -> Tensor:
        actions = batch["action"]
        noise = noise if noise is not None else torch.randn_like(actions)
        time = time if time is not None else torch.full((actions.shape[0],), 0.5)
        return self.model(*self._inputs(batch), actions, noise, time)


def smolvla_like_batch(policy: SmolVLALikePolicy, batch_size: int = 2, seed: int = 0) -> dict:
    """A pre-processed batch: images in [0, 1], 6 language tokens (sample 1 right-padded by 2), state, action."""
    g = torch.Generator().manual_seed(seed)
    cfg = policy.config
    batch = {cam: torch.rand(batch_size, 3, cfg.image_size, cfg.image_size, generator=g) for cam in cfg.image_features}
    mask = torch.ones(batch_size, 6, dtype=torch.bool)
    mask[1:, -2:] = False
    batch.update(
        {
            LANG_TOKENS: torch.randint(2, 60, (batch_size, 6), generator=g),
            LANG_MASK: mask,
            STATE: torch.randn(batch_size, cfg.state_dim, generator=g),
            "action": torch.randn(batch_size, cfg.chunk_size, cfg.max_action_dim, generator=g),
        }
    )
    return batch
