"""Generate expert episodes: on disk (DROID raw or LeRobot v3.0) or in memory for trainers.

Layout seeds: episode i of a run with ``seed`` s uses layout seed ``s * 100_000 + i``;
``evaluate_policy`` draws from a disjoint range, so evaluation layouts are never training ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..droid._writer import write_droid_episode
from ..lerobot._writer import LeRobotWriter
from ._env import CAMERAS, CONTROL_HZ, SimEnv
from ._record import record_episode

FORMATS = ("droid", "lerobot")


def layout_seed(seed: int, i: int) -> int:
    """Layout seed of training episode ``i`` under run seed ``seed``."""
    return int(seed) * 100_000 + int(i)


def generate_episodes(
    task: str,
    n_episodes: int,
    out_dir: str | Path,
    seed: int = 0,
    fmt: str = "droid",
    image_size: int = 224,
    cameras=CAMERAS,
    progress: bool = True,
) -> list[Path]:
    """Roll out the scripted expert ``n_episodes`` times and write them as ``fmt``.

    Returns the episode directories (droid) or ``[dataset root]`` (lerobot).  Deterministic:
    the same arguments give the same arrays.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is unknown; choose from {list(FORMATS)}")
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if image_size % 2:
        raise ValueError(f"image_size must be even (H.264 needs even sizes), got {image_size}")
    out = Path(out_dir)
    writer = LeRobotWriter(out, fps=CONTROL_HZ) if fmt == "lerobot" else None
    paths: list[Path] = []
    with SimEnv(task, seed=seed, image_size=image_size, render=True, cameras=cameras) as env:
        for i in tqdm(range(n_episodes), desc=f"{task} -> {fmt}", disable=not progress):
            rec = record_episode(env, layout_seed(seed, i), render=True)
            if writer is None:
                paths.append(write_droid_episode(out, rec, i))
            else:
                writer.add_episode(rec)
    if writer is not None:
        paths.append(writer.finalize())
    return paths


def make_training_episodes(
    task: str,
    n: int,
    seed: int = 0,
    render: bool = False,
    image_size: int = 224,
    cameras=CAMERAS,
    render_stride: int = 1,
    progress: bool = True,
    action_noise: float = 0.0,
) -> list[dict]:
    """In-memory expert episodes for trainers (``action_noise``: see ``record_episode``).

    Each: ``obs`` (T, state_dim) float32, ``proprio`` (T, 7), ``action`` (T, 7), ``instruction``,
    ``success``; with ``render=True`` also ``images`` {cam: (T', H, W, 3) uint8} where T' = T
    (``render_stride`` 1) or the steps listed in ``image_steps``.
    """
    out = []
    with SimEnv(task, seed=seed, image_size=image_size, render=render, cameras=cameras) as env:
        for i in tqdm(range(n), desc=f"{task} episodes", disable=not progress):
            rec = record_episode(
                env, layout_seed(seed, i), render=render, render_stride=render_stride, action_noise=action_noise
            )
            ep = {
                "obs": rec["state"],
                "proprio": rec["proprio"],
                "action": rec["actions"],
                "instruction": rec["instruction"],
                "success": rec["success"],
            }
            if render:
                ep["images"] = rec["images"]
                ep["image_steps"] = rec.get("image_steps", np.arange(len(rec["actions"])))
            out.append(ep)
    return out
