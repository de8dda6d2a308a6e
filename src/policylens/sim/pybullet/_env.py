"""SimEnv: a pybullet Panda table-top environment with DROID-like cameras, 15 Hz control.

Actions are 7-D absolute end-effector targets ``[x, y, z, roll, pitch, yaw, gripper]``: the
position in the world (= robot base) frame, the orientation as extrinsic-XYZ Euler angles
*relative to the top-down grasp pose* (0 = gripper pointing down, so no angle wraps at +-pi),
gripper in [0, 1] (0 open, 1 closed, as in DROID).  Each control step solves IK once and runs
16 physics substeps of 1/240 s (15 Hz).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as p

from ._camera import PinholeCamera, look_at, matrix_to_quat, pose_to_6d
from ._scene import (
    ARM_JOINTS,
    EE_LINK,
    FINGER_JOINTS,
    HAND_LINK,
    MAX_OBJECTS,
    Scene,
    SceneSpec,
)
from ._tasks import get_task

CONTROL_HZ = 15
SUBSTEPS = 16  # 240 Hz physics / 15 Hz control
CAMERAS = ("varied_camera_1", "varied_camera_2", "hand_camera")
# state layout: proprio (7) | object xyz (3 per object) | target one-hot | target xyz (3) | tray xyz (3)
_OBJECTS_AT = 7
_ONEHOT_AT = _OBJECTS_AT + 3 * MAX_OBJECTS
_TARGET_AT = _ONEHOT_AT + MAX_OBJECTS
STATE_DIM = _TARGET_AT + 3 + 3
_DOWN = np.asarray(p.getMatrixFromQuaternion(p.getQuaternionFromEuler([math.pi, 0.0, 0.0]))).reshape(3, 3)
# fixed external cameras (camera-to-world eye / target); the hand camera rides on the hand link
_EXTERNAL = {
    "varied_camera_1": ((0.95, -0.5, 0.5), (0.48, 0.0, 0.0)),
    "varied_camera_2": ((0.95, 0.5, 0.5), (0.48, 0.0, 0.0)),
}
_HAND_OFFSET = np.array([0.05, 0.0, 0.02])  # camera origin in the hand frame, looking along hand +z


def _rot(rpy) -> np.ndarray:
    return np.asarray(p.getMatrixFromQuaternion(p.getQuaternionFromEuler(list(rpy)))).reshape(3, 3)


class SimEnv:
    """Closed-loop environment.  ``reset() -> obs``; ``step(action (7,)) -> (obs, done, info)``."""

    def __init__(
        self,
        task: str = "reach",
        seed: int = 0,
        image_size: int = 224,
        render: bool = True,
        cameras=CAMERAS,
    ) -> None:
        self.task = get_task(task)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"cameras={unknown} are unknown; choose from {list(CAMERAS)}")
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.render_images = bool(render)
        self.camera = PinholeCamera(self.image_size, self.image_size, fov_deg=60.0)
        self.rng = np.random.default_rng(seed)
        self.scene = Scene()
        self.scene_spec: SceneSpec | None = None
        self.instruction = ""
        self.t = 0
        self.gripper_command = 0.0
        self.expert_memory: dict = {}
        self.last_joint_targets = np.zeros(7)

    # ---- episode --------------------------------------------------------------------------
    def reset(self, seed: int | None = None, render: bool | None = None, target: int | None = None) -> dict:
        """Sample a new layout (from ``seed`` if given, else the env's generator) and observe.

        ``target`` names another of the layout's objects as the target (index into its objects; the
        layout, start pose and instruction template are unchanged): the same scene with each object
        named in turn is how a policy is shown that the words, not the scene, pick the target.
        """
        spec = self.task.sample(self.rng) if seed is None else self.sample_layout(seed)
        if target is not None:
            if not 0 <= int(target) < len(spec.objects):
                raise ValueError(
                    f"reset: target={target}, but layout seed {seed} has {len(spec.objects)} objects "
                    f"(pass 0..{len(spec.objects) - 1}, or None for the layout's own target)"
                )
            spec = dataclasses.replace(spec, target=int(target))
        self.scene_spec = spec
        self.scene.build(self.scene_spec)
        if self.scene_spec.start_ee is not None:
            self._place_gripper(np.asarray(self.scene_spec.start_ee, dtype=np.float64))
        self.instruction = self.task.instruction(self.scene_spec)
        self.t, self.gripper_command, self.expert_memory = 0, 0.0, {}
        self.last_joint_targets = np.array(
            [self.scene.client.getJointState(self.scene.robot, j)[0] for j in ARM_JOINTS]
        )
        return self.observe(render)

    def sample_layout(self, seed: int) -> SceneSpec:
        """The layout ``reset(seed)`` builds (objects, target, start pose), without building it."""
        return self.task.sample(np.random.default_rng(seed))

    def _place_gripper(self, pos: np.ndarray) -> None:
        """Teleport the arm (joint reset, no physics) so the gripper points down at ``pos``."""
        c, robot = self.scene.client, self.scene.robot
        for _ in range(3):  # IK from the current joints, refined from its own answer
            q = c.calculateInverseKinematics(
                robot, EE_LINK, pos.tolist(), matrix_to_quat(_DOWN), maxNumIterations=100, residualThreshold=1e-6
            )
            for j, qj in zip(ARM_JOINTS, q[:7], strict=True):
                c.resetJointState(robot, j, qj)
        c.setJointMotorControlArray(robot, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=q[:7], forces=[200.0] * 7)

    def step(self, action: np.ndarray, render: bool | None = None) -> tuple[dict, bool, dict]:
        """Execute one 15 Hz control step towards the absolute ee target ``action`` (7,)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be a finite (7,) vector [xyz, rpy, gripper], got {action!r}")
        c, robot = self.scene.client, self.scene.robot
        pos = np.clip(a[:3], [0.15, -0.6, 0.0], [0.85, 0.6, 0.8])
        rot = _DOWN @ _rot(a[3:6])
        quat = matrix_to_quat(rot)
        q = c.calculateInverseKinematics(
            robot, EE_LINK, pos.tolist(), quat, maxNumIterations=60, residualThreshold=1e-5
        )
        self.last_joint_targets = np.asarray(q[:7])
        c.setJointMotorControlArray(robot, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=q[:7], forces=[200.0] * 7)
        self.gripper_command = float(np.clip(a[6], 0.0, 1.0))
        width = 0.04 * (1.0 - self.gripper_command)
        c.setJointMotorControlArray(
            robot, FINGER_JOINTS, p.POSITION_CONTROL, targetPositions=[width, width], forces=[60.0, 60.0]
        )
        for _ in range(SUBSTEPS):
            c.stepSimulation()
        self.t += 1
        success = self.task.success(self)
        done = success or self.t >= self.task.max_steps
        return self.observe(render), done, {"success": success, "t": self.t}

    # ---- robot state ----------------------------------------------------------------------
    def ee_position(self) -> np.ndarray:
        return np.asarray(self.scene.client.getLinkState(self.scene.robot, EE_LINK)[4])

    def proprio(self) -> np.ndarray:
        """(7,) float32: ee xyz, ee rpy relative to top-down, gripper closedness in [0, 1]."""
        c = self.scene.client
        ls = c.getLinkState(self.scene.robot, EE_LINK)
        R = np.asarray(c.getMatrixFromQuaternion(ls[5])).reshape(3, 3)
        rpy = p.getEulerFromQuaternion(matrix_to_quat(_DOWN.T @ R))
        width = sum(c.getJointState(self.scene.robot, j)[0] for j in FINGER_JOINTS)
        grip = float(np.clip(1.0 - width / 0.08, 0.0, 1.0))
        return np.array([*ls[4], *rpy, grip], dtype=np.float32)

    def gripper_opening(self) -> float:
        return 1.0 - float(self.proprio()[6])

    def state(self) -> np.ndarray:
        """(STATE_DIM,) float32 = proprio (7) + object xyz (5 x 3, 0-padded) + target one-hot (5)
        + target xyz (3) + tray xyz (3, zero when absent)."""
        out = np.zeros(STATE_DIM, dtype=np.float32)
        out[:7] = self.proprio()
        pos = self.scene.object_positions()
        out[_OBJECTS_AT : _OBJECTS_AT + pos.size] = pos.reshape(-1)
        target = self.scene_spec.target
        out[_ONEHOT_AT + target] = 1.0
        out[_TARGET_AT : _TARGET_AT + 3] = pos[target]
        if self.scene_spec.tray_xy is not None:
            out[-3:] = [*self.scene_spec.tray_xy, 0.0]
        return out

    # ---- cameras --------------------------------------------------------------------------
    def camera_pose(self, camera: str) -> np.ndarray:
        """Camera-to-world (4, 4), OpenCV axes."""
        if camera in _EXTERNAL:
            eye, target = _EXTERNAL[camera]
            return look_at(np.array(eye), np.array(target))
        ls = self.scene.client.getLinkState(self.scene.robot, HAND_LINK)
        R = np.asarray(p.getMatrixFromQuaternion(ls[5])).reshape(3, 3)
        T = np.eye(4)
        T[:3, :3] = R @ _rot([0.0, 0.0, -math.pi / 2])  # hand +z forward, image x along hand y
        T[:3, 3] = np.asarray(ls[4]) + R @ _HAND_OFFSET
        return T

    def calibration(self) -> dict[str, dict]:
        """Per camera: ``intrinsics`` (3, 3), ``extrinsics`` (4, 4) camera-to-world, ``extrinsics_6d``."""
        K = self.camera.intrinsics
        out = {}
        for cam in self.cameras:
            T = self.camera_pose(cam)
            out[cam] = {
                "intrinsics": K.copy(),
                "extrinsics": T,
                "extrinsics_6d": pose_to_6d(T),
                "width": self.image_size,
                "height": self.image_size,
                "moving": cam == "hand_camera",
            }
        return out

    def observe(self, render: bool | None = None) -> dict:
        """Observation dict; images / depth / segmentation only when rendering."""
        obs = {"state": self.state(), "proprio": self.proprio(), "instruction": self.instruction}
        if self.render_images if render is None else render:
            obs["images"], obs["depth"], obs["segmentation"] = {}, {}, {}
            for cam in self.cameras:
                rgb, depth, ids = self.camera.render(self.scene.client, self.camera_pose(cam))
                obs["images"][cam] = rgb  # (H, W, 3) uint8
                obs["depth"][cam] = depth  # (H, W) float32 metres, 0 = no hit
                obs["segmentation"][cam] = self.scene.label_image(ids)  # (H, W) uint8 labels
        return obs

    def close(self) -> None:
        self.scene.close()

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
