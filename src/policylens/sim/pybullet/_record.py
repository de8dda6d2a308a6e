"""Record one simulated episode into a plain dict of arrays (the input of both writers).

Keys: ``instruction`` str, ``success`` bool, ``task`` str, ``seed`` int, ``fps`` int,
``actions`` (T, 7), ``proprio`` (T, 7), ``state`` (T, D), ``joint_positions`` (T, 7) observed,
``joint_targets`` (T, 7) IK targets, ``timestamps`` (T,) seconds, ``intrinsics`` {cam: (3, 3)},
``extrinsics`` {cam: (T, 4, 4)} camera-to-world, and when rendered ``images`` {cam: (T, H, W, 3)
uint8}, ``depth`` {cam: (T, H, W) float32 m}, ``segmentation`` {cam: (T, H, W) uint8};
``scene`` describes the objects and the segmentation labels.
Observation t is taken before action t is executed (DROID's convention).
"""

from __future__ import annotations

import numpy as np

from ._env import CONTROL_HZ, SimEnv
from ._experts import expert_action
from ._scene import LABEL_OBJECT0


def scene_description(env: SimEnv) -> dict:
    """JSON-ready description of the layout and the segmentation label map."""
    spec = env.scene_spec
    labels = {"0": "background", "1": "table", "2": "robot", "3": "tray"}
    for i, o in enumerate(spec.objects):
        labels[str(LABEL_OBJECT0 + i)] = o.name
    return {
        "objects": [{"shape": o.shape, "colour": o.colour, "xy": list(o.xy)} for o in spec.objects],
        "target": spec.target,
        "target_label": LABEL_OBJECT0 + spec.target,
        "tray_xy": list(spec.tray_xy) if spec.tray_xy is not None else None,
        "segmentation_labels": labels,
    }


def record_episode(
    env: SimEnv,
    seed: int,
    policy=None,
    render: bool = True,
    render_stride: int = 1,
    action_noise: float = 0.0,
    target: int | None = None,
) -> dict:
    """Roll out ``policy`` (default: the scripted expert) from layout ``seed`` and record it.

    With ``render_stride`` k > 1 images are rendered at steps 0, k, 2k, ... only and
    ``image_steps`` lists those steps.  ``action_noise`` > 0 (metres) executes each action's
    xyz plus Gaussian noise of that std while recording the clean action (DART-style data
    that shows a cloned policy how to recover from its own drift); the noise is seeded by ``seed``.
    ``target``: another of the layout's objects as the target (see ``SimEnv.reset``).
    """
    if render_stride < 1:
        raise ValueError(f"render_stride must be >= 1, got {render_stride}")
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0 metres, got {action_noise}")
    noise_rng = np.random.default_rng([int(seed), 7] if target is None else [int(seed), 7, int(target)])
    obs = env.reset(seed=seed, render=render, target=target)
    if policy is not None and hasattr(policy, "reset"):
        policy.reset()
    cal = env.calibration()
    rec: dict = {k: [] for k in ("actions", "proprio", "state", "joint_positions", "joint_targets")}
    rec["extrinsics"] = {c: [] for c in env.cameras}
    frames: dict = {"images": {}, "depth": {}, "segmentation": {}}
    image_steps: list[int] = []
    success, t = False, 0
    while True:
        if "images" in obs:
            image_steps.append(t)
            for key in frames:
                for cam, arr in obs[key].items():
                    frames[key].setdefault(cam, []).append(arr)
        for cam in env.cameras:
            rec["extrinsics"][cam].append(env.camera_pose(cam))
        action = expert_action(env) if policy is None else np.asarray(policy.act(obs), dtype=np.float32)
        rec["actions"].append(np.asarray(action, dtype=np.float32))
        rec["proprio"].append(obs["proprio"])
        rec["state"].append(obs["state"])
        client, robot = env.scene.client, env.scene.robot
        rec["joint_positions"].append([client.getJointState(robot, j)[0] for j in range(7)])
        t += 1
        want = render and (t % render_stride == 0)
        executed = np.array(action, dtype=np.float32)
        if action_noise > 0:
            executed[:3] += noise_rng.normal(0.0, action_noise, 3).astype(np.float32)
        obs, done, info = env.step(executed, render=want)
        rec["joint_targets"].append(env.last_joint_targets.copy())
        success = info["success"]
        if done:
            break
    out = {k: np.asarray(v, dtype=np.float32) for k, v in rec.items() if k != "extrinsics"}
    out["extrinsics"] = {c: np.asarray(v) for c, v in rec["extrinsics"].items()}
    out["intrinsics"] = {c: cal[c]["intrinsics"] for c in env.cameras}
    out["timestamps"] = np.arange(len(out["actions"]), dtype=np.float64) / CONTROL_HZ
    for key, per_cam in frames.items():
        if per_cam:
            out[key] = {c: np.stack(v) for c, v in per_cam.items()}
    if render and render_stride > 1:
        out["image_steps"] = np.asarray(image_steps)
    out.update(
        instruction=env.instruction,
        success=bool(success),
        task=env.task.name,
        seed=int(seed),
        fps=CONTROL_HZ,
        image_size=env.image_size,
        scene=scene_description(env),
    )
    return out
