"""The reference reach policy's architecture and the folder of its shipped checkpoint.

``policylens.sim.train_reach_policy`` trains it on simulated expert episodes (``policylens train
diffusion --out runs/diffusion_reach``); docs/diffusion_policy.md says how the shipped checkpoint was made.
"""

from __future__ import annotations

from pathlib import Path

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
