"""DDPM and DDIM samplers (epsilon prediction, clipped x0), matching the standard formulas.

Both draw noise only from the ``torch.Generator`` they are given, so two runs with the same
seed see the same initial and per-step noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def make_betas(num_train_timesteps: int, beta_schedule: str = "squaredcos_cap_v2") -> Tensor:
    """Betas of the forward process, float64, shape (num_train_timesteps,)."""
    if beta_schedule == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        n = num_train_timesteps
        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
        return torch.tensor(betas, dtype=torch.float64)
    if beta_schedule == "linear":
        return torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
    raise ValueError(f"beta_schedule={beta_schedule!r}: expected 'squaredcos_cap_v2' or 'linear'.")


class _Base:
    def __init__(self, num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2", clip_sample=True):
        self.num_train_timesteps = num_train_timesteps
        self.clip_sample = clip_sample
        self.betas = make_betas(num_train_timesteps, beta_schedule)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (N,) float64
        self.timesteps: list[int] = []
        self._acp: list[float] = self.alphas_cumprod.tolist()

    def set_timesteps(self, num_inference_steps: int) -> list[int]:
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps={num_inference_steps}: expected 1..{self.num_train_timesteps}.")
        ratio = self.num_train_timesteps // num_inference_steps
        self.step_ratio = ratio
        self.timesteps = [i * ratio for i in range(num_inference_steps)][::-1]  # "leading" spacing
        return self.timesteps

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """q(x_t | x_0) for integer timesteps t (B,); x0, noise (B, ...)."""
        acp = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
        acp = acp.reshape(-1, *([1] * (x0.dim() - 1)))
        return acp.sqrt() * x0 + (1 - acp).sqrt() * noise

    def _x0(self, eps: Tensor, t: int, sample: Tensor) -> Tensor:
        a_t = self._acp[t]
        x0 = (sample - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        return x0.clamp(-1.0, 1.0) if self.clip_sample else x0


class DDPMScheduler(_Base):
    """Ancestral DDPM sampling with the "fixed_small" posterior variance."""

    def step(self, eps: Tensor, t: int, sample: Tensor, generator: torch.Generator | None = None) -> Tensor:
        prev_t = t - self.step_ratio
        a_t = self._acp[t]
        a_prev = self._acp[prev_t] if prev_t >= 0 else 1.0
        cur_alpha = a_t / a_prev
        cur_beta = 1 - cur_alpha
        x0 = self._x0(eps, t, sample)
        coef_x0 = math.sqrt(a_prev) * cur_beta / (1 - a_t)
        coef_xt = math.sqrt(cur_alpha) * (1 - a_prev) / (1 - a_t)
        prev = coef_x0 * x0 + coef_xt * sample
        if t > 0:
            var = max((1 - a_prev) / (1 - a_t) * cur_beta, 1e-20)
            noise = torch.randn(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            prev = prev + math.sqrt(var) * noise
        return prev


class DDIMScheduler(_Base):
    """Deterministic DDIM sampling (eta = 0, final alpha set to one)."""

    def step(self, eps: Tensor, t: int, sample: Tensor, generator: torch.Generator | None = None) -> Tensor:
        prev_t = t - self.step_ratio
        a_prev = self._acp[prev_t] if prev_t >= 0 else 1.0
        x0 = self._x0(eps, t, sample)
        return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
