"""Camera images of a MetaWorld scene through MuJoCo's offscreen renderer, with OpenCV calibration.

Headless Linux renders through OSMesa: Debian's ``libosmesa6`` and ``MUJOCO_GL=osmesa
PYOPENGL_PLATFORM=osmesa``. MuJoCo reads ``MUJOCO_GL`` once, when it is first imported, so
:func:`configure_gl` (called before policylens first imports metaworld) sets both on a machine
without a display where OSMesa is installed and neither is set; a state-only environment made
first then does not stop a rendering one made later. :func:`prepare_rendering` raises naming the
fix when rendering cannot work. A ``MUJOCO_GL`` already set (``egl`` on a GPU machine) is kept.

Calibration follows the rest of policylens: intrinsics with pixel centres at integers
(``cx = (W - 1) / 2``), extrinsics camera-to-world with OpenCV axes (x right, y down, z forward);
MuJoCo cameras look along their -z with y up, hence the flip of y and z.
"""

from __future__ import annotations

import ctypes.util
import math
import os
import sys

import numpy as np

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
_FLIP = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes -> OpenCV camera axes


class RenderingUnavailable(RuntimeError):
    """MuJoCo cannot render offscreen here; the message names what to install or set."""


def _find_osmesa() -> str | None:
    return ctypes.util.find_library("OSMesa")


def _headless() -> bool:
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure_gl() -> None:
    """Before mujoco is imported: choose OSMesa on a Linux machine without a display, if it is installed."""
    if "mujoco" in sys.modules or os.environ.get("MUJOCO_GL") or not _headless() or _find_osmesa() is None:
        return
    os.environ["MUJOCO_GL"] = "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


def prepare_rendering() -> None:
    """Raise ``RenderingUnavailable`` naming the fix when MuJoCo cannot render offscreen here."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if (backend == "osmesa" or (backend == "" and _headless())) and _find_osmesa() is None:
        raise RenderingUnavailable(
            "cameras=...: rendering MetaWorld images needs OSMesa, which is not installed: run "
            "apt-get install libosmesa6 (Debian/Ubuntu) and set MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa, "
            "or set MUJOCO_GL=egl on a machine with a GPU; state observations need neither"
        )
    configure_gl()


def check_cameras(cameras, model) -> tuple[str, ...]:
    """``cameras`` as a tuple of camera names of ``model``; unknown names raise listing the known ones."""
    names = [model.camera(i).name for i in range(model.ncam)]
    cams = (cameras,) if isinstance(cameras, str) else tuple(cameras)
    unknown = [c for c in cams if c not in names]
    if unknown:
        raise ValueError(f"cameras={list(cams)}: {unknown} are not cameras of this MetaWorld scene; known: {names}")
    return cams


class CameraRig:
    """Renders ``cameras`` of a MuJoCo (model, data) at ``size`` x ``size`` pixels."""

    def __init__(self, model, cameras: tuple[str, ...], size: int) -> None:
        import mujoco

        if size < 8 or size % 2:
            raise ValueError(f"image_size={size}: expected an even number of pixels >= 8")
        self.cameras, self.size, self.model = cameras, size, model
        vis = model.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, size), max(vis.offheight, size)
        try:
            self.renderer = mujoco.Renderer(model, size, size)
        except Exception as exc:  # a GL context that cannot be made: glfw without a display, no OSMesa
            raise RenderingUnavailable(
                f"MuJoCo could not create an offscreen GL context ({exc}); set MUJOCO_GL=osmesa "
                "PYOPENGL_PLATFORM=osmesa before anything imports mujoco (policylens sets them when the first "
                "MetaWorld environment of the process renders) and install libosmesa6"
            ) from exc

    def render(self, data) -> dict[str, np.ndarray]:
        """{camera: (H, W, 3) uint8}."""
        out = {}
        for cam in self.cameras:
            self.renderer.update_scene(data, camera=cam)
            out[cam] = self.renderer.render().copy()
        return out

    def intrinsics(self, camera: str) -> np.ndarray:
        """OpenCV K (3, 3) of ``camera`` from its vertical field of view."""
        fovy = float(self.model.cam_fovy[self.model.camera(camera).id])
        f = 0.5 * self.size / math.tan(math.radians(fovy) / 2)
        c = (self.size - 1) / 2
        return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])

    def extrinsics(self, data, camera: str) -> np.ndarray:
        """Camera-to-world (4, 4), OpenCV axes, at the current state (``gripperPOV`` moves)."""
        i = self.model.camera(camera).id
        pose = np.eye(4)
        pose[:3, :3] = data.cam_xmat[i].reshape(3, 3) @ _FLIP
        pose[:3, 3] = data.cam_xpos[i]
        return pose

    def close(self) -> None:
        self.renderer.close()
