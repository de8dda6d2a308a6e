"""The tiny runs that test_train_torchrun.py trains both in one process and as torchrun ranks
(_dp_worker.py): the same models, episodes, seeds and global batch (4: 2 per rank under 2 ranks)."""

from pathlib import Path

import numpy as np
import torch

from policylens.models import TinyVLA, TinyVLAConfig, VLATrainConfig, train_vla
from policylens.models._train_vla import vla_step
from policylens.models.diffusion import DiffusionPolicyConfig, train_diffusion_policy
from zoo import vla_episodes

STEPS, CUT = 4, 2
VLA = {"image_size": 28, "vision_layers": 1, "layers": 1, "max_text_tokens": 8, "chunk_size": 3}
DP = {"obs_dim": 3, "action_dim": 2, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4, "n_layer": 1, "n_emb": 16}
DP_KW = {"batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "seed": 0, "save_every": 100}


def run_vla(out: Path, steps: int = STEPS, step=vla_step, replay: bool = False) -> list[float]:
    """``replay``: a quarter of every global batch (1 row of 4) from two other episodes."""
    torch.manual_seed(0)  # the same initial weights; a resumed run loads its own
    model = TinyVLA(TinyVLAConfig(**VLA))
    config = VLATrainConfig(steps=steps, batch_size=4, warmup=2, save_every=100, replay_fraction=0.25 * replay)
    others = [{**ep, "action": ep["action"] - 5.0, "instruction": "lift the gripper"} for ep in vla_episodes(2, 5)]
    return train_vla(model, vla_episodes(t=6), config, out, step=step, replay=others if replay else None)


def dp_episodes(n: int = 3, t: int = 12) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"obs": rng.normal(size=(t, 3)), "action": rng.normal(size=(t, 2))} for _ in range(n)]


def run_diffusion(out: Path, steps: int = STEPS, step=None, dropout: bool = False) -> None:
    """Without ``dropout`` the run is one process's exactly; with it each rank draws its own masks."""
    config = DiffusionPolicyConfig(**DP, p_drop_attn=0.1 if dropout else 0.0)
    train_diffusion_policy(
        dp_episodes(), config, steps=steps, out_dir=out, log_dir=out / "tb", step=step, progress=True, **DP_KW
    )
