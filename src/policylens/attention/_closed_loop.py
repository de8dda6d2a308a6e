"""Closed-loop faithfulness: simulated rollouts with the high-attention area masked at every
step, against equal-area controls, the whole view and no mask (success with Wilson intervals)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import robot_state
from ._faithfulness import FILLS, _batch, _frame_maps, apply_fill, mask_regions

__all__ = ["closed_loop_masked"]


@dataclass
class _MaskedPredictor:
    """``predict_chunk(obs)`` of ``model`` on images masked by ``condition``, recomputed from
    this step's attention; noise and blobs re-seeded per episode (paired across conditions)."""

    model: nn.Module
    condition: str
    view: str
    layer: int
    phase: str
    area_frac: float
    fill: str
    seed: int
    episode: int = -1

    def __post_init__(self) -> None:
        self.reset()  # evaluate_policy resets again before each episode: episodes 1, 2, ...

    def reset(self) -> None:
        self.episode += 1
        self.rng = np.random.default_rng([self.seed, self.episode])
        self.gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.episode)

    @torch.no_grad()
    def predict_chunk(self, obs: dict) -> np.ndarray:
        cams = list(self.model.config.cameras)
        images = {c: np.asarray(obs["images"][c])[None] for c in cams}  # (1, H, W, 3)
        state = robot_state(obs)[None]
        text = [obs["instruction"]]
        if self.condition != "none":
            key = "random_0" if self.condition == "random" else self.condition
            batch = _batch(self.model, images, text, state)
            fmaps = _frame_maps(self.model, batch, images, self.layer, self.phase, self.seed)
            for c in cams if self.view == "all" else [self.view]:
                region = mask_regions(fmaps[c][0], self.area_frac, int(key == "random_0"), self.rng)[key]
                images[c] = apply_fill(images[c][0], region, self.fill, self.rng)[None]
        batch = _batch(self.model, images, text, state)
        return self.model.sample_actions(batch, generator=self.gen)[0].float().cpu().numpy()


def closed_loop_masked(
    policy: nn.Module,
    task: str = "reach",
    episodes: int = 10,
    condition: str = "high",
    layer: int = -1,
    area_frac: float = 0.1,
    seed: int = 0,
    phase: str = "prefix",
    fill: str = "mean",
    view: str = "all",
    max_steps: int | None = None,
    progress: bool = False,
):
    """Closed-loop success when every observation is masked before the policy acts.

    ``condition``: ``none`` | ``high`` | ``low`` | ``random`` (one blob per step) | ``shifted`` |
    ``whole``, recomputed each time a chunk is predicted (from that step's ``phase``/``layer``
    map); ``view``: ``"all"`` or one camera. Runs :func:`policylens.sim.pybullet.evaluate_policy`
    (first half of each chunk executed) at the policy's image size and cameras; returns its
    ``EvalResult`` (``success_rate``, Wilson ``interval``). Same ``seed``: same layouts and noise.
    """
    from ..sim import ChunkedPolicy
    from ..sim.pybullet import evaluate_policy

    cfg = policy.config
    choices = ("none", "high", "low", "random", "shifted", "whole")
    if condition not in choices or view not in ("all", *cfg.cameras) or fill not in FILLS:
        raise ValueError(
            f"closed_loop_masked: condition={condition!r} (choose from {choices}), view={view!r} (choose 'all' or "
            f"from {list(cfg.cameras)}), fill={fill!r} (choose from {sorted(FILLS)})"
        )
    agent = _MaskedPredictor(policy, condition, view, layer, phase, area_frac, fill, seed)
    agent = ChunkedPolicy(agent, k=max(1, cfg.chunk_size // 2))
    kw = {"image_size": cfg.image_size, "cameras": cfg.cameras, "max_steps": max_steps, "progress": progress}
    return evaluate_policy(agent, task, episodes, seed, **kw)
