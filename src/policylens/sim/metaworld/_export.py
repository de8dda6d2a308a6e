"""Write MetaWorld episodes as LeRobot v3.0 or DROID raw, through the project's writers.

LeRobot keeps MetaWorld's own arrays: ``action`` (T, 4) hand displacement + gripper,
``observation.state`` (T, 39), ``observation.proprio`` (T, 4) hand xyz + gripper opening. DROID's
layout is absolute end-effector targets, so :func:`droid_record` converts: ``action/cartesian_position``
= where each action sent the hand (xyz) and orientation 0 (MetaWorld's gripper always points down),
``gripper_position`` = (gripper action + 1) / 2 in [0, 1] (1 closed); the robot state likewise, with
gripper closedness = 1 - opening; the full 39-D observation goes to ``observation/policylens/state``.
State-only episodes carry no cameras (``metadata.json`` lists ``"cameras": []``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._seeds import train_layout_seed
from ._env import CONTROL_HZ, MetaWorldEnv
from ._record import record_episode

FORMATS = ("droid", "lerobot")
ROBOT_TYPE = "sawyer_metaworld"
WRIST_CAMERAS = ("gripperPOV",)


def droid_record(rec: dict) -> dict:
    """``rec`` (see ``record_episode``) with DROID's 7-D absolute actions and proprio."""
    T = len(rec["actions"])
    zeros = np.zeros((T, 3), dtype=np.float32)
    grip_cmd = np.clip((rec["actions"][:, 3:4] + 1.0) / 2.0, 0.0, 1.0)
    closed = 1.0 - rec["proprio"][:, 3:4]
    return {
        **rec,
        "actions": np.concatenate([rec["hand_targets"], zeros, grip_cmd], axis=1).astype(np.float32),  # (T, 7)
        "proprio": np.concatenate([rec["proprio"][:, :3], zeros, closed], axis=1).astype(np.float32),  # (T, 7)
        "wrist_cameras": WRIST_CAMERAS,
    }


def generate_episodes(
    task: str,
    n_episodes: int,
    out_dir: str | Path,
    seed: int = 0,
    fmt: str = "lerobot",
    cameras=(),
    image_size: int = 224,
    action_noise: float = 0.0,
    if_exists: str = "error",
    max_steps: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Roll out the scripted expert of ``task`` ``n_episodes`` times on training layouts and write them.

    Every episode is written, successes and failures (DROID sorts them into ``success/`` and
    ``failure/``; LeRobot's ``meta/policylens.json`` flags each). ``cameras`` (MuJoCo camera names,
    see ``CAMERAS``) adds RGB video at ``image_size`` pixels; it needs OSMesa (``libosmesa6``).
    ``if_exists``: ``"error"`` (refuse, or finish an interrupted call with the same arguments),
    ``"overwrite"`` or ``"append"`` (DROID only), as for the pybullet generator; ``max_steps`` cuts
    episodes short (default: MetaWorld's 500). Returns the episode directories (droid) or
    ``[dataset root]`` (lerobot).
    """
    from ...data.lerobot import LeRobotWriter
    from .._resume import plan_generation  # resumes an interrupted call, as for the pybullet generator

    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is unknown; choose from {list(FORMATS)}")
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes}: expected >= 1")
    out = Path(out_dir)
    settings = {"suite": "metaworld", "task": task, "format": fmt, "seed": seed, "cameras": list(cameras)}
    settings.update(image_size=image_size, action_noise=action_noise, max_steps=max_steps)
    # a bad task, camera or size fails here, before anything is written
    with MetaWorldEnv(task, cameras=cameras, image_size=image_size, max_steps=max_steps) as env:
        plan = plan_generation(out, settings, n_episodes, if_exists)
        if not plan.todo:
            return [out] if fmt == "lerobot" else plan.paths()
        writer = LeRobotWriter(out, fps=CONTROL_HZ, robot_type=ROBOT_TYPE) if fmt == "lerobot" else None

        def record(i: int) -> dict:
            rec = record_episode(env, train_layout_seed(seed, i), action_noise=action_noise)
            return rec if writer is not None else droid_record(rec)

        return plan.write(record, writer, f"{task} -> {fmt}", progress)
