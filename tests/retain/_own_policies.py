"""Tiny researcher-owned policies for ``retain train --policy DIR`` tests: LeRobot's SmolVLA (the
``smolvla_zoo`` stand-in behind a pre-processor that also normalises actions, as LeRobot's does) and
transformers' pi0 / pi0.5 (``pi_zoo``, saved with action statistics), a LeRobot dataset of the
simulated reach task and bridge caches built from them in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import pi_zoo
from lerobot_zoo import byte_preprocessor
from policylens.models import LeRobotTeacher, NativePIPolicy, lerobot_adapter
from policylens.tap import register_adapter
from smolvla_zoo import SmolVLALikeConfig, SmolVLALikePolicy

register_adapter("smolvla_zoo.SmolVLALikePolicy", lambda _m: lerobot_adapter("smolvla"))

ACTION_MEAN = np.linspace(-0.2, 0.3, 7)
ACTION_STD = np.linspace(0.5, 2.0, 7)
SMOLVLA_MAP = {"varied_camera_1": "observation.images.top", "hand_camera": "observation.images.wrist"}
PI_MAP = {"varied_camera_1": "base_0_rgb", "hand_camera": "left_wrist_0_rgb", "varied_camera_2": "right_wrist_0_rgb"}


def action_preprocessor(policy):
    """``byte_preprocessor`` plus LeRobot's action normalisation ((a - mean) / std)."""
    base = byte_preprocessor(policy, max_tokens=6)

    def run(frame: dict) -> dict:
        out = base(frame)
        if "action" in frame:
            mean, std = torch.as_tensor(ACTION_MEAN).float(), torch.as_tensor(ACTION_STD).float()
            out["action"] = (frame["action"] - mean) / std
        return out

    return run


def smolvla(seed: int = 0) -> LeRobotTeacher:
    cfg = SmolVLALikeConfig(state_dim=7, max_state_dim=8, max_action_dim=7, chunk_size=4)
    policy = SmolVLALikePolicy(cfg, seed=seed)
    return LeRobotTeacher(policy, action_preprocessor(policy), "smolvla")


def native_pi(variant: str, seed: int = 0) -> NativePIPolicy:
    model, proc = pi_zoo.pair(variant, seed)
    proc.actions_mean, proc.actions_std = ACTION_MEAN.tolist(), ACTION_STD.tolist()
    return NativePIPolicy(model, proc)


def save_native_pi(variant: str, path: Path) -> Path:
    policy = native_pi(variant)
    policy.model.save_pretrained(path)
    policy.processor.save_pretrained(path)
    return path


def reach_dataset(root: Path, episodes: int = 1, seed: int = 0, task: str = "reach") -> Path:
    from policylens.sim.pybullet import generate_episodes

    generate_episodes(task, episodes, root, seed=seed, fmt="lerobot", image_size=32, progress=False)
    return root


def bridge_cache(model, dataset: str, out: Path, camera_map: dict, monkeypatch) -> Path:
    """A float32 bridge cache of ``model`` (an in-memory policy, handed to ``build_cache`` by name)."""
    import policylens.models
    from policylens.anchors import build_cache

    monkeypatch.setattr(policylens.models, "load_model", lambda _name: model)
    build_cache("own", dataset, str(out), kind="bridge", dtype="float32", batch_size=4, camera_map=camera_map,
                progress=False)  # fmt: skip
    monkeypatch.undo()
    return out
