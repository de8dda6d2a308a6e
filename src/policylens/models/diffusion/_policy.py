"""``TinyDiffusionPolicy``: normaliser + transformer denoiser + DDPM/DDIM sampling, saved as a checkpoint
(``config.json`` + ``model.safetensors``, ``policylens.runs``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ...runs import read_checkpoint, save_checkpoint
from ._config import DiffusionPolicyConfig
from ._normalizer import MinMaxNormalizer
from ._schedulers import DDIMScheduler, DDPMScheduler
from ._transformer import TransformerForDiffusion

SAMPLERS = ("ddpm", "ddim")


class TinyDiffusionPolicy(nn.Module):
    """Diffusion policy over action chunks, conditioned on ``n_obs_steps`` observation vectors.

    ``model`` is the denoiser (what BAC caches); ``predict_action`` runs the sampler.
    """

    def __init__(self, config: DiffusionPolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.model = TransformerForDiffusion(config)
        self.obs_normalizer = MinMaxNormalizer(config.obs_dim)
        self.action_normalizer = MinMaxNormalizer(config.action_dim)
        kw = {"num_train_timesteps": config.num_train_timesteps, "beta_schedule": config.beta_schedule}
        self.ddpm = DDPMScheduler(**kw, clip_sample=config.clip_sample)
        self.ddim = DDIMScheduler(**kw, clip_sample=config.clip_sample)

    @property
    def num_inference_steps(self) -> int:
        return self.config.num_inference_steps

    def _check_obs(self, obs: Tensor) -> None:
        c = self.config
        if obs.dim() != 3 or obs.shape[1] != c.n_obs_steps or obs.shape[2] != c.obs_dim:
            raise ValueError(
                f"obs has shape {tuple(obs.shape)}; expected (B, n_obs_steps={c.n_obs_steps}, obs_dim={c.obs_dim})."
            )

    @torch.no_grad()
    def predict_action(
        self,
        obs: Tensor,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        sampler: str = "ddpm",
    ) -> Tensor:
        """Sample an action chunk: obs (B, n_obs_steps, obs_dim) -> actions (B, horizon, action_dim).

        ``generator`` supplies the initial and every per-step noise draw, so equal seeds give
        equal noise in every caching mode.
        """
        self._check_obs(obs)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}.")
        c = self.config
        dtype = self.model.input_emb.weight.dtype
        device = self.model.input_emb.weight.device
        cond = self.obs_normalizer.normalize(obs.to(device=device, dtype=dtype))  # (B, To, O)
        sched = self.ddpm if sampler == "ddpm" else self.ddim
        steps = sched.set_timesteps(num_inference_steps or c.num_inference_steps)
        shape = (obs.shape[0], c.horizon, c.action_dim)
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)  # (B, T, A)
        t_buf = [torch.full((1,), t, device=device, dtype=torch.long) for t in steps]
        for t, t_tensor in zip(steps, t_buf, strict=True):
            eps = self.model(x, t_tensor, cond)  # (B, T, A)
            x = sched.step(eps, t, x, generator=generator)
        return self.action_normalizer.unnormalize(x)

    def forward(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.predict_action(obs, generator=generator)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (denoiser + normalisers) and ``config.json``."""
        return save_checkpoint(self, directory, config=self.config.to_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> TinyDiffusionPolicy:
        """Load a policy written by :meth:`save_pretrained`."""
        config, state = read_checkpoint(directory, hint="write one with TinyDiffusionPolicy.save_pretrained")
        policy = cls(DiffusionPolicyConfig.from_dict(config))
        policy.load_state_dict({k: v.to(map_location) for k, v in state.items()})
        return policy.eval()
