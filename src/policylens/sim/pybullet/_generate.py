"""Generate expert episodes: on disk (DROID raw or LeRobot v3.0) or in memory for trainers.

Layout seeds: episode i of a run with ``seed`` s uses layout seed ``s * 100_000 + i``;
``evaluate_policy`` draws from a disjoint range, so evaluation layouts are never training ones.

An existing non-empty output directory is refused (``if_exists="error"``) unless it holds an
unfinished run of the same settings, which the call then finishes (``_resume``: ``generate.json``
records the settings and each finished episode): DROID folder names come from the episode index,
so a second run would write into the first run's folders. ``"overwrite"`` clears a dataset this
module wrote first; ``"append"`` (DROID only) continues the episode numbering, so the new episodes
get new folder names and new layouts.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...data.lerobot import LeRobotWriter
from .._resume import plan_generation
from .._seeds import eval_layout_seed
from .._seeds import train_layout_seed as layout_seed  # the name this package has always exported
from ._env import CAMERAS, CONTROL_HZ, SimEnv
from ._record import record_episode
from ._tasks import get_task

FORMATS = ("droid", "lerobot")


def generate_episodes(
    task: str,
    n_episodes: int,
    out_dir: str | Path,
    seed: int = 0,
    fmt: str = "droid",
    image_size: int = 224,
    cameras=CAMERAS,
    progress: bool = True,
    if_exists: str = "error",
    policy=None,
    lerobot_depth: bool = False,
) -> list[Path]:
    """Roll out the scripted expert ``n_episodes`` times and write them as ``fmt``.

    With ``policy`` (an agent with ``act(obs)``, e.g. ``ChunkedPolicy(TinyVLA)``) its own
    closed-loop rollouts are written instead, successes and failures, on the held-out
    evaluation layouts that ``evaluate_policy(seed=seed)`` uses (so a recording reproduces the
    reported success rate); the recorded actions are the policy's.

    Returns the episode directories (droid) or ``[dataset root]`` (lerobot).  Deterministic:
    the same arguments give the same arrays.  ``if_exists`` says what to do with a non-empty
    ``out_dir``: ``"error"`` (refuse, or finish an interrupted call with the same arguments: only
    the missing episodes are written), ``"overwrite"`` (clear it first) or ``"append"`` (DROID
    only; episodes ``k, k+1, ...`` after the ``k`` already there). Ctrl-C raises
    ``GenerationInterrupted`` (finished episodes kept). ``lerobot_depth``: also write depth into a
    LeRobot dataset, as LeRobot's main branch stores it (0.4.x reads it as an RGB camera).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r} is unknown; choose from {list(FORMATS)}")
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if image_size % 2:
        raise ValueError(f"image_size must be even (H.264 needs even sizes), got {image_size}")
    get_task(task)  # an unknown task fails before the folder is touched
    settings = {"suite": "pybullet", "task": task, "format": fmt, "seed": seed, "image_size": image_size}
    settings.update(cameras=list(cameras), policy=None if policy is None else type(policy).__name__)
    if fmt == "lerobot":
        settings["lerobot_depth"] = lerobot_depth
    out = Path(out_dir)
    plan = plan_generation(out, settings, n_episodes, if_exists, resumable=policy is None)
    if not plan.todo:
        return [out] if fmt == "lerobot" else plan.paths()
    writer = LeRobotWriter(out, fps=CONTROL_HZ, depth=lerobot_depth) if fmt == "lerobot" else None
    with SimEnv(task, seed=seed, image_size=image_size, render=True, cameras=cameras) as env:
        if hasattr(policy, "bind"):  # agents that read the live environment (the scripted expert)
            policy.bind(env)

        def record(i: int) -> dict:
            layout = layout_seed(seed, i) if policy is None else eval_layout_seed(seed, i)
            return record_episode(env, layout, policy=policy, render=True)

        return plan.write(record, writer, f"{task} -> {fmt}", progress)


def _every_target_jobs(env: SimEnv, seed: int):
    """(layout seed, target) pairs without end: layout 0 with each of its objects named, then layout 1, ..."""
    for i in itertools.count():
        ls = layout_seed(seed, i)
        for target in range(len(env.sample_layout(ls).objects)):
            yield ls, target


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
    depth: bool = False,
    every_target: bool = False,
) -> list[dict]:
    """In-memory expert episodes for trainers (``action_noise``: see ``record_episode``).

    ``every_target=True``: each layout is recorded once per object, each time naming that object
    (same scene and start pose, another instruction and goal), until ``n`` episodes are made; the
    words then decide the target within a layout, not the layout's look.

    Each: ``obs`` (T, state_dim) float32, ``proprio`` (T, 7), ``action`` (T, 7), ``instruction``,
    ``success``; with ``render=True`` also ``images`` {cam: (T', H, W, 3) uint8} where T' = T
    (``render_stride`` 1) or the steps listed in ``image_steps``, and each camera's calibration:
    ``intrinsics`` {cam: (3, 3)} and ``extrinsics`` {cam: (T, 4, 4)} camera-to-world, OpenCV axes, one
    per step (index it with ``image_steps`` for the rendered frames).

    ``depth=True`` (needs ``render=True``) also keeps ``depth`` {cam: (T', H, W) float32 metres, 0 =
    invalid} and ``segmentation`` {cam: (T', H, W) uint8 labels; names in ``scene``}.  Memory: RGB
    alone is 3 H W bytes per camera per rendered frame; depth and labels add 5 H W more (x 8/3): at
    224 px, 3 cameras and a 60-step episode, 27 MB of RGB + 45 MB of depth and labels per episode.
    """
    if depth and not render:
        raise ValueError("depth=True needs render=True (depth and segmentation are rendered with the images)")
    out = []
    with SimEnv(task, seed=seed, image_size=image_size, render=render, cameras=cameras) as env:
        if every_target:
            jobs = itertools.islice(_every_target_jobs(env, seed), n)
        else:
            jobs = ((layout_seed(seed, i), None) for i in range(n))
        for ls, target in tqdm(jobs, total=n, desc=f"{task} episodes", disable=not progress):
            rec = record_episode(
                env, ls, render=render, render_stride=render_stride, action_noise=action_noise, target=target
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
                ep["intrinsics"], ep["extrinsics"] = rec["intrinsics"], rec["extrinsics"]
            if depth:
                ep["depth"], ep["segmentation"], ep["scene"] = rec["depth"], rec["segmentation"], rec["scene"]
            out.append(ep)
    return out
