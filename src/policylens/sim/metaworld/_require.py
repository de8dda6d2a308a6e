"""Import MetaWorld (an optional extra) on first use, with one clear error when it is missing.

Nothing in ``policylens`` imports ``metaworld``, ``mujoco`` or ``gymnasium`` at package import: the
modules here call :func:`require_metaworld` inside the functions that need the simulator.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._render import configure_gl

INSTALL_HINT = 'pip install -e ".[metaworld]"'


class MetaWorldUnavailable(ImportError):
    """MetaWorld (or a package it needs) is not installed; the message names the install command."""


def require_metaworld() -> ModuleType:
    """The imported ``metaworld`` package (which registers the ``Meta-World/*`` gymnasium ids)."""
    configure_gl()  # MuJoCo picks its GL backend once, at import
    try:
        importlib.import_module("gymnasium")
        module = importlib.import_module("metaworld")
        importlib.import_module("metaworld.policies")
    except ImportError as exc:
        raise MetaWorldUnavailable(
            f"MetaWorld support needs the metaworld extra ({exc.name or exc} is not installed): "
            f"run {INSTALL_HINT} (metaworld>=3.1, mujoco, gymnasium, packaging)"
        ) from exc
    return module
