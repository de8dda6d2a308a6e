"""Fuse patch features from several 2D encoders (e.g. SigLIP, DINOv2) into one token stream.

Each encoder e gets an adapter ``Linear(LayerNorm(x_e))`` to the common width D. The LayerNorm comes
*before* the projection and is per encoder: encoders differ in feature scale by orders of magnitude,
and without it the loudest one would dominate every weighted sum. Then ``h_e`` (B, N, D) are mixed:

- ``softmax``: one learned logit per encoder, ``w = softmax(logits)``, ``y = Σ_e w_e h_e``.
- ``gate``: per-token weights ``g = softmax(W [h_1 … h_E])`` (B, N, E), ``y = Σ_e g_e h_e``.
- ``moe``: per-token router probabilities ``p = softmax(W [h_1 … h_E])``; each token keeps its top-k
  encoders (the experts), weights renormalised over those k, ``y = Σ_{e∈topk} p_e h_e / Σ_{topk} p``.
  Load-balance loss (Switch Transformer / GShard): with ``T`` tokens,
  ``f_e`` = share of the T·k token→expert assignments that go to e and ``P_e`` = mean router
  probability of e over tokens, ``L_balance = E · Σ_e f_e P_e``: 1 when routing is uniform, E when
  every token goes to one expert with probability 1. Add ``α · L_balance`` (α ≈ 0.01) to the loss.

Every forward returns :class:`FusionOutput` with the gate statistics for logging: mean gate per
encoder, mean per-token gate entropy (nats) and expert load ``f`` (uniform 1/E in the dense modes,
where every encoder sees every token). Dense modes report a balance loss of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["FUSION_MODES", "FusionConfig", "FusionOutput", "GateStats", "MultiEncoderFusion", "balance_loss"]

FUSION_MODES = ("softmax", "gate", "moe")


@dataclass
class FusionConfig:
    """``in_dims``: each encoder's feature width, in the order features are passed; ``dim``: the
    common width; ``mode``: one of ``FUSION_MODES``; ``top_k``: experts per token (``moe`` only)."""

    in_dims: tuple[int, ...]
    dim: int
    mode: str = "softmax"
    top_k: int = 1

    def __post_init__(self) -> None:
        self.in_dims = tuple(int(d) for d in self.in_dims)
        if not self.in_dims or min(self.in_dims) < 1 or self.dim < 1:
            raise ValueError(f"FusionConfig: in_dims={self.in_dims}, dim={self.dim}; need >= 1 encoder, widths >= 1")
        if self.mode not in FUSION_MODES:
            raise ValueError(f"FusionConfig.mode={self.mode!r}; use one of {list(FUSION_MODES)}")
        if not 1 <= self.top_k <= len(self.in_dims):
            raise ValueError(f"FusionConfig.top_k={self.top_k}; use 1..{len(self.in_dims)} (the number of encoders)")


@dataclass
class GateStats:
    """Detached gate statistics: ``gate_mean`` (E,), ``entropy`` (), ``load`` (E,)."""

    gate_mean: Tensor
    entropy: Tensor
    load: Tensor

    def to_log(self, prefix: str = "fusion/") -> dict[str, float]:
        out = {f"{prefix}entropy": float(self.entropy)}
        for e, (g, f) in enumerate(zip(self.gate_mean.tolist(), self.load.tolist(), strict=True)):
            out[f"{prefix}gate_{e}"], out[f"{prefix}load_{e}"] = g, f
        return out


@dataclass
class FusionOutput:
    tokens: Tensor  # (B, N, D)
    balance_loss: Tensor  # () float32, 0 in the dense modes
    stats: GateStats


def balance_loss(probs: Tensor, topk_idx: Tensor) -> Tensor:
    """Switch/GShard load-balance loss ``E · Σ_e f_e P_e`` from router ``probs`` (T, E) and the
    chosen experts ``topk_idx`` (T, k); see the module docstring."""
    e = probs.shape[-1]
    load = _load(topk_idx, e)
    return e * (load * probs.float().mean(0)).sum()


def _load(topk_idx: Tensor, e: int) -> Tensor:
    counts = torch.zeros(e, device=topk_idx.device).index_add_(
        0, topk_idx.reshape(-1), torch.ones(topk_idx.numel(), device=topk_idx.device)
    )
    return counts / topk_idx.numel()


def _entropy(p: Tensor) -> Tensor:  # p (..., E) -> mean entropy over leading dims
    p = p.float()
    return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()


class MultiEncoderFusion(nn.Module):
    """``MultiEncoderFusion(FusionConfig((1152, 1024), 512, "moe", top_k=1))([siglip, dino])``
    with each feature tensor (B, N, C_e) over the same N patches -> :class:`FusionOutput`."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.adapters = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, config.dim)) for c in config.in_dims)
        n = len(config.in_dims)
        if config.mode == "softmax":
            self.logits = nn.Parameter(torch.zeros(n))
        else:
            self.router = nn.Linear(n * config.dim, n)

    def forward(self, features: list[Tensor] | tuple[Tensor, ...]) -> FusionOutput:
        cfg = self.config
        if len(features) != len(cfg.in_dims):
            raise ValueError(f"MultiEncoderFusion: got {len(features)} feature tensors; config has {len(cfg.in_dims)}")
        for i, (x, c) in enumerate(zip(features, cfg.in_dims, strict=True)):
            if x.dim() != 3 or x.shape[-1] != c or x.shape[:2] != features[0].shape[:2]:
                raise ValueError(
                    f"MultiEncoderFusion: features[{i}] has shape {tuple(x.shape)}; expected (B, N, {c}) "
                    f"with (B, N) = {tuple(features[0].shape[:2])} shared by all encoders (resample patches first)"
                )
        h = torch.stack([a(x) for a, x in zip(self.adapters, features, strict=True)], dim=-2)  # (B, N, E, D)
        n = h.shape[-2]
        zero = torch.zeros((), device=h.device)
        if cfg.mode == "softmax":
            w = torch.softmax(self.logits.float(), dim=0)  # (E,)
            tokens = (h * w.to(h.dtype)[:, None]).sum(-2)
            stats = GateStats(w.detach(), _entropy(w.detach()), torch.full((n,), 1.0 / n, device=h.device))
            return FusionOutput(tokens, zero, stats)
        probs = torch.softmax(self.router(h.flatten(-2)).float(), dim=-1)  # (B, N, E)
        if cfg.mode == "gate":
            tokens = (h * probs.to(h.dtype)[..., None]).sum(-2)
            g = probs.detach()
            stats = GateStats(g.flatten(0, 1).mean(0), _entropy(g), torch.full((n,), 1.0 / n, device=h.device))
            return FusionOutput(tokens, zero, stats)
        top_p, top_i = probs.topk(cfg.top_k, dim=-1)  # (B, N, k)
        weights = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))  # (B, N, E)
        tokens = (h * weights.to(h.dtype)[..., None]).sum(-2)
        flat_p, flat_i = probs.flatten(0, 1), top_i.flatten(0, 1)  # (T, E), (T, k)
        g = probs.detach()
        stats = GateStats(g.flatten(0, 1).mean(0), _entropy(g), _load(flat_i, n))
        return FusionOutput(tokens, balance_loss(flat_p, flat_i), stats)
