"""Reference diffusion policy: a small transformer denoiser (Chi et al. layout) with DDPM/DDIM sampling.

>>> policy = TinyDiffusionPolicy(DiffusionPolicyConfig(obs_dim=10, action_dim=7)).eval()
>>> actions = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))  # (B, 16, 7)
"""

from ._config import POLICY_TYPE, DiffusionPolicyConfig
from ._dataset import dataset_config, dataset_episodes
from ._metaworld import METAWORLD_CONFIG, metaworld_config
from ._normalizer import MinMaxNormalizer
from ._policy import TinyDiffusionPolicy
from ._reach import REACH_CONFIG
from ._recipe import diffusion_loop_kwargs
from ._schedulers import DDIMScheduler, DDPMScheduler, make_betas
from ._train import diffusion_step, make_windows, train_diffusion_policy
from ._transformer import TransformerForDiffusion

__all__ = [
    "METAWORLD_CONFIG",
    "POLICY_TYPE",
    "REACH_CONFIG",
    "DDIMScheduler",
    "DDPMScheduler",
    "DiffusionPolicyConfig",
    "MinMaxNormalizer",
    "TinyDiffusionPolicy",
    "TransformerForDiffusion",
    "dataset_config",
    "dataset_episodes",
    "diffusion_loop_kwargs",
    "diffusion_step",
    "make_betas",
    "make_windows",
    "metaworld_config",
    "train_diffusion_policy",
]
