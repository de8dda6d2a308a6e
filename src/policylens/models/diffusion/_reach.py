"""Train the reference reach policy on simulated expert episodes, and drive it in the simulator.

Retrain it with ``policylens train diffusion --out runs/diffusion_reach`` (the CLI calls
:func:`train_reach_policy`); docs/diffusion_policy.md says how the shipped checkpoint was made.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import torch

from ._config import DiffusionPolicyConfig
from ._policy import TinyDiffusionPolicy
from ._train import train_diffusion_policy

REACH_CONFIG = {
    "obs_dim": 33,
    "action_dim": 7,
    "horizon": 16,
    "n_obs_steps": 2,
    "n_action_steps": 8,
    "n_layer": 6,
    "n_head": 4,
    "n_emb": 128,
}
ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "diffusion_reach"


class DiffusionChunkPredictor:
    """``obs dict -> (n_action_steps, 7)`` chunk for ``data.sim.ChunkedPolicy``.

    Keeps the last ``n_obs_steps`` ``obs["state"]`` vectors (the first one repeated at episode
    start) and reseeds its noise generator at each ``reset()`` from ``seed`` and the episode index,
    so every caching mode sees identical initial and per-step noise in episode i.
    """

    def __init__(self, policy: TinyDiffusionPolicy, seed: int = 0, **predict_kwargs) -> None:
        self.policy, self.seed, self.kwargs = policy, seed, predict_kwargs
        self.history: deque[np.ndarray] = deque(maxlen=policy.config.n_obs_steps)
        self.episode = -1
        self.generator = torch.Generator()

    def reset(self) -> None:
        self.history.clear()
        self.episode += 1
        self.generator.manual_seed(self.seed * 1_000_003 + self.episode)

    def __call__(self, obs: dict) -> np.ndarray:
        c = self.policy.config
        state = np.asarray(obs["state"], dtype=np.float32)
        if not self.history:
            self.history.extend([state] * c.n_obs_steps)
        else:
            self.history.append(state)
        x = torch.from_numpy(np.stack(self.history))[None]  # (1, To, O)
        chunk = self.policy.predict_action(x, generator=self.generator, **self.kwargs)[0]  # (T, A)
        start = c.n_obs_steps - 1
        return chunk[start : start + c.n_action_steps].numpy()


def train_reach_policy(
    n_episodes: int = 1500,
    steps: int = 6000,
    seed: int = 0,
    log_dir: str | Path | None = None,
    action_noise: float = 0.02,
    **train_kwargs,
) -> TinyDiffusionPolicy:
    """Expert reach episodes from ``data.sim`` (executed with ``action_noise`` metres of
    DART-style noise, recorded clean) -> a trained :class:`TinyDiffusionPolicy`."""
    from policylens.data.sim import make_training_episodes

    episodes = make_training_episodes("reach", n_episodes, seed=seed, action_noise=action_noise)
    config = DiffusionPolicyConfig(**REACH_CONFIG)
    return train_diffusion_policy(episodes, config, steps=steps, seed=seed, log_dir=log_dir, **train_kwargs)
