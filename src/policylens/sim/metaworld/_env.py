"""MetaWorldEnv: one MetaWorld task through gymnasium's ``Meta-World/MT1`` entry point.

MT1 draws 50 fixed layouts (object and goal positions) from its constructor seed and picks one of
them at random on each reset, ignoring ``reset(seed=...)``. Here a layout is a function of the
seed given to :meth:`MetaWorldEnv.reset` alone: the env's generator is reseeded with it and the
layout vector is drawn from the task's own random-reset space, the distribution MT1 draws its 50
layouts from (``seeded_rand_vec``). Training and evaluation seeds then come from disjoint ranges
(see ``policylens.sim._seeds``), and the same seed gives the same layout in any process. The goal position stays
in the observation, as MT1 defines it.

Observation: ``state`` (39,) float32 = hand xyz, gripper opening (0 closed .. 1 open), object 1
xyz + quaternion, object 2 xyz + quaternion, the same 18 values of the previous step, goal xyz;
``instruction``; with cameras ``images`` {camera: (H, W, 3) uint8}. Action: (4,) in [-1, 1] =
hand displacement (x 1 cm per unit, through MuJoCo's mocap body) and gripper (-1 open, +1 closed).
Control runs at 80 Hz (5 physics steps of 2.5 ms); episodes end at the first step whose
``info["success"]`` is true or after ``max_steps`` (MetaWorld's 500 by default).
"""

from __future__ import annotations

import numpy as np

from ._render import CameraRig, check_cameras, prepare_rendering
from ._require import require_metaworld
from ._tasks import check_task, instruction

STATE_DIM, ACTION_DIM = 39, 4
CONTROL_HZ = 80


def _task_selector(env):
    """The wrapper that picks one of MT1's layouts on reset (``RandomTaskSelectWrapper``)."""
    while not hasattr(env, "toggle_sample_tasks_on_reset"):
        if not hasattr(env, "env"):
            raise RuntimeError("Meta-World/MT1 no longer wraps its env in a task selector; metaworld>=3.1,<4 does")
        env = env.env
    return env


class MetaWorldEnv:
    """``reset(seed) -> obs``; ``step(action (4,)) -> (obs, done, info)``; ``info["success"]`` as MetaWorld says."""

    def __init__(self, task: str, cameras=(), image_size: int = 224, max_steps: int | None = None) -> None:
        check_task(task)
        if cameras:
            prepare_rendering()
        require_metaworld()
        import gymnasium as gym

        # gymnasium's passive env checker only warns that MetaWorld's observation bounds are loose
        self.env = gym.make("Meta-World/MT1", env_name=task, seed=0, disable_env_checker=True)
        self.env.reset()  # sets one of MT1's tasks: goal-observable 39-D observations
        _task_selector(self.env).toggle_sample_tasks_on_reset(False)
        self.raw = self.env.unwrapped
        self.raw._freeze_rand_vec = False  # draw each layout from the env's generator, seeded in reset()
        self.raw.seeded_rand_vec = True
        limit = int(self.raw.max_path_length)
        if max_steps is not None and not 1 <= max_steps <= limit:
            raise ValueError(f"max_steps={max_steps}: expected 1..{limit} (MetaWorld's episode limit)")
        self.task, self.max_steps, self.instruction = task, max_steps or limit, instruction(task)
        self.image_size = image_size
        self.rig = CameraRig(self.raw.model, check_cameras(cameras, self.raw.model), image_size) if cameras else None
        self.cameras: tuple[str, ...] = self.rig.cameras if self.rig else ()
        self.t, self.seed = 0, None

    def reset(self, seed: int) -> dict:
        """Start the episode of layout ``seed`` (the same seed gives the same layout)."""
        self.raw.seed(int(seed))
        state, _ = self.env.reset()
        self.t, self.seed = 0, int(seed)
        return self._observe(state)

    def step(self, action) -> tuple[dict, bool, dict]:
        if self.seed is None:
            raise RuntimeError("MetaWorldEnv.step before reset(seed): call reset first")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action has shape {action.shape}; expected ({ACTION_DIM},): hand dx, dy, dz, gripper")
        state, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        success = bool(info["success"])
        done = success or terminated or truncated or self.t >= self.max_steps
        return self._observe(state), done, {"success": success, "t": self.t, "reward": float(reward)}

    def _observe(self, state) -> dict:
        obs = {"state": np.asarray(state, dtype=np.float32), "instruction": self.instruction}
        if self.rig is not None:
            obs["images"] = self.rig.render(self.raw.data)
        return obs

    def hand_target(self) -> np.ndarray:
        """(3,) where the mocap body now pulls the hand (absolute; world frame)."""
        return np.array(self.raw.data.mocap_pos[0], dtype=np.float32)

    def calibration(self) -> dict[str, dict[str, np.ndarray]]:
        """{camera: {"intrinsics": (3, 3), "extrinsics": (4, 4) camera-to-world now}}."""
        if self.rig is None:
            return {}
        return {
            c: {"intrinsics": self.rig.intrinsics(c), "extrinsics": self.rig.extrinsics(self.raw.data, c)}
            for c in self.cameras
        }

    def layout(self) -> dict:
        """JSON-ready description of the current layout (MetaWorld's random-reset vector and positions)."""
        raw = self.raw
        return {
            "rand_vec": np.asarray(raw._last_rand_vec, dtype=float).tolist(),
            "object_init": np.asarray(raw.obj_init_pos, dtype=float).tolist(),
            "goal": np.asarray(raw._target_pos, dtype=float).tolist(),
        }

    def close(self) -> None:
        if self.rig is not None:
            self.rig.close()
        self.env.close()

    def __enter__(self) -> MetaWorldEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
