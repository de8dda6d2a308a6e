"""Table-top scene: a Franka Panda at a table, coloured primitive objects and an optional tray.

World frame = robot base frame (like DROID): the base sits at the origin, the table top at z = 0.
Segmentation labels are stable across scenes: 0 background, 1 table, 2 robot, 3 tray, 10 + i object i.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet as p
import pybullet_data
from pybullet_utils import bullet_client

from ._quiet import quiet_c_stdout

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.7, 0.15),
    "blue": (0.1, 0.25, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.55, 0.15, 0.75),
    "orange": (1.0, 0.5, 0.05),
}
# shape -> half height (m); cube edge 0.045, ball radius 0.025, cylinder radius 0.022 height 0.05
SHAPES: dict[str, float] = {"cube": 0.0225, "ball": 0.025, "cylinder": 0.025}
MAX_OBJECTS = 5
LABEL_BACKGROUND, LABEL_TABLE, LABEL_ROBOT, LABEL_TRAY, LABEL_OBJECT0 = 0, 1, 2, 3, 10

ARM_JOINTS = list(range(7))
FINGER_JOINTS = [9, 10]
EE_LINK = 11  # panda_grasptarget, between the fingertips
HAND_LINK = 8
HOME_JOINTS = [0.0, -0.6, 0.0, -2.4, 0.0, 1.8, 0.785]
TRAY_SCALE = 0.4  # traybox.urdf is 0.6 m wide -> 0.24 m
TRAY_INNER_HALF = 0.1


@dataclass
class ObjectSpec:
    """One object: ``shape`` in SHAPES, ``colour`` in COLOURS, ``xy`` position on the table."""

    shape: str
    colour: str
    xy: tuple[float, float]

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape={self.shape!r} is unknown; choose from {sorted(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour={self.colour!r} is unknown; choose from {sorted(COLOURS)}")

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class SceneSpec:
    """A layout: objects (the target is ``objects[target]``), the tray position and the gripper's
    start point, if any."""

    objects: list[ObjectSpec]
    target: int
    tray_xy: tuple[float, float] | None = None
    start_ee: tuple[float, float, float] | None = None  # gripper start point; None = the home pose
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, got {len(self.objects)}")
        if not 0 <= self.target < len(self.objects):
            raise ValueError(f"target={self.target} is out of range for {len(self.objects)} objects")


class Scene:
    """Builds a SceneSpec in its own pybullet DIRECT client and tracks body ids."""

    def __init__(self) -> None:
        with quiet_c_stdout():
            self.client = bullet_client.BulletClient(connection_mode=p.DIRECT)
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.robot = -1
        self.object_bodies: list[int] = []
        self.tray = -1
        self.labels: dict[int, int] = {}  # pybullet body id -> segmentation label

    def build(self, spec: SceneSpec) -> None:
        c = self.client
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=1.0 / 240.0, numSolverIterations=60)
        plane = c.loadURDF("plane.urdf", [0, 0, -0.626])
        table = c.loadURDF("table/table.urdf", [0.5, 0, -0.626], useFixedBase=True)
        self.robot = c.loadURDF("franka_panda/panda.urdf", [0, 0, 0], useFixedBase=True)
        self.labels = {plane: LABEL_BACKGROUND, table: LABEL_TABLE, self.robot: LABEL_ROBOT}
        for j, q in zip(ARM_JOINTS, HOME_JOINTS, strict=True):
            c.resetJointState(self.robot, j, q)
        for j in FINGER_JOINTS:
            c.resetJointState(self.robot, j, 0.04)
            c.changeDynamics(self.robot, j, lateralFriction=1.5, spinningFriction=0.01)
        self.tray = -1
        if spec.tray_xy is not None:
            self.tray = c.loadURDF(
                "tray/traybox.urdf", [*spec.tray_xy, 0.0], useFixedBase=True, globalScaling=TRAY_SCALE
            )
            self.labels[self.tray] = LABEL_TRAY
        self.object_bodies = [self._add_object(o) for o in spec.objects]
        for i, b in enumerate(self.object_bodies):
            self.labels[b] = LABEL_OBJECT0 + i
        for _ in range(20):  # let objects settle
            c.stepSimulation()

    def _add_object(self, o: ObjectSpec) -> int:
        c = self.client
        rgba = [*COLOURS[o.colour], 1.0]
        if o.shape == "cube":
            col = c.createCollisionShape(p.GEOM_BOX, halfExtents=[0.0225] * 3)
            vis = c.createVisualShape(p.GEOM_BOX, halfExtents=[0.0225] * 3, rgbaColor=rgba)
        elif o.shape == "ball":
            col = c.createCollisionShape(p.GEOM_SPHERE, radius=0.025)
            vis = c.createVisualShape(p.GEOM_SPHERE, radius=0.025, rgbaColor=rgba)
        else:
            col = c.createCollisionShape(p.GEOM_CYLINDER, radius=0.022, height=0.05)
            vis = c.createVisualShape(p.GEOM_CYLINDER, radius=0.022, length=0.05, rgbaColor=rgba)
        body = c.createMultiBody(0.08, col, vis, [*o.xy, SHAPES[o.shape] + 0.001])
        c.changeDynamics(body, -1, lateralFriction=1.2, rollingFriction=0.002, spinningFriction=0.002)
        return body

    def object_positions(self) -> np.ndarray:
        """(N, 3) object centres in the world frame."""
        return np.array([self.client.getBasePositionAndOrientation(b)[0] for b in self.object_bodies])

    def label_image(self, body_ids: np.ndarray) -> np.ndarray:
        """Map a pybullet body-id image (H, W) to scene labels (H, W) uint8."""
        out = np.zeros(body_ids.shape, dtype=np.uint8)
        for body, label in self.labels.items():
            out[body_ids == body] = label
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None
