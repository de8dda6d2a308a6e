"""Transformer denoiser in the layout of Chi et al.'s ``TransformerForDiffusion`` (Diffusion Policy).

Action tokens attend causally to each other and, through cross-attention, to a condition
memory ``[timestep token, observation tokens]`` produced by a small encoder.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._config import DiffusionPolicyConfig


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of a diffusion timestep: (B,) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -scale)  # (half,)
        emb = x.float()[:, None] * freqs[None, :]  # (B, half)
        return torch.cat((emb.sin(), emb.cos()), dim=-1)  # (B, dim)


def _causal_masks(horizon: int, n_cond_tokens: int) -> tuple[Tensor, Tensor]:
    """Float masks of the original: action token i sees actions <= i and cond tokens s with i >= s - 1."""
    allowed = torch.tril(torch.ones(horizon, horizon, dtype=torch.bool))  # (T, T)
    tgt = torch.zeros(horizon, horizon).masked_fill(~allowed, float("-inf"))
    t, s = torch.meshgrid(torch.arange(horizon), torch.arange(n_cond_tokens), indexing="ij")
    mem_allowed = t >= (s - 1)  # time token is cond token 0
    mem = torch.zeros(horizon, n_cond_tokens).masked_fill(~mem_allowed, float("-inf"))
    return tgt, mem


class TransformerForDiffusion(nn.Module):
    """Epsilon-predicting denoiser: ``(sample (B, T, A), timestep (B,), cond (B, To, O)) -> (B, T, A)``."""

    def __init__(self, config: DiffusionPolicyConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        n_cond_tokens = 1 + c.n_obs_steps
        self.input_emb = nn.Linear(c.action_dim, c.n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.horizon, c.n_emb))
        self.drop = nn.Dropout(c.p_drop_emb)
        self.time_emb = SinusoidalPosEmb(c.n_emb)
        self.cond_obs_emb = nn.Linear(c.obs_dim, c.n_emb)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_cond_tokens, c.n_emb))
        layer_args = {  # encoder and decoder blocks share these, as in the original
            "d_model": c.n_emb,
            "nhead": c.n_head,
            "dim_feedforward": 4 * c.n_emb,
            "dropout": c.p_drop_attn,
            "activation": "gelu",
            "batch_first": True,
            "norm_first": True,
        }
        if c.n_cond_layers > 0:
            enc_layer = nn.TransformerEncoderLayer(**layer_args)
            self.encoder: nn.Module = nn.TransformerEncoder(
                enc_layer, num_layers=c.n_cond_layers, enable_nested_tensor=False
            )
        else:
            self.encoder = nn.Sequential(nn.Linear(c.n_emb, 4 * c.n_emb), nn.Mish(), nn.Linear(4 * c.n_emb, c.n_emb))
        dec_layer = nn.TransformerDecoderLayer(**layer_args)
        self.decoder = nn.TransformerDecoder(dec_layer, num_layers=c.n_layer)
        if c.causal_attn:
            tgt_mask, mem_mask = _causal_masks(c.horizon, n_cond_tokens)
            self.register_buffer("mask", tgt_mask, persistent=False)  # (T, T)
            self.register_buffer("memory_mask", mem_mask, persistent=False)  # (T, 1 + To)
        else:
            self.mask = None
            self.memory_mask = None
        self.ln_f = nn.LayerNorm(c.n_emb)
        self.head = nn.Linear(c.n_emb, c.action_dim)
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, mean=0.0, std=0.02)
        nn.init.normal_(self.cond_pos_emb, mean=0.0, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, sample: Tensor, timestep: Tensor | int, cond: Tensor) -> Tensor:
        B = sample.shape[0]
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.reshape(-1).expand(B)  # (B,)
        time_tok = self.time_emb(timestep).to(sample.dtype)[:, None]  # (B, 1, E)
        cond_tok = torch.cat([time_tok, self.cond_obs_emb(cond)], dim=1)  # (B, 1 + To, E)
        memory = self.encoder(self.drop(cond_tok + self.cond_pos_emb[:, : cond_tok.shape[1]]))
        x = self.drop(self.input_emb(sample) + self.pos_emb[:, : sample.shape[1]])  # (B, T, E)
        # tgt_is_causal given explicitly: torch would otherwise compare the mask on every call (a host sync)
        x = self.decoder(
            tgt=x, memory=memory, tgt_mask=self.mask, memory_mask=self.memory_mask, tgt_is_causal=self.mask is not None
        )
        return self.head(self.ln_f(x))  # (B, T, A)
