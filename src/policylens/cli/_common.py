"""What several ``policylens`` command modules share: choice tuples, help texts, the interrupt exit.

The choice tuples are the library's own, repeated here so that ``policylens`` (``--help`` included)
starts without importing torch, which every job imports (2-3 s). ``MIRRORS`` names where each
one lives; tests/cli/test_choices.py checks that each equals its original and that every option
with a fixed set of values shows exactly its library tuple. An option takes them as
``Literal[TUPLE]`` (typer 0.2x shows and checks the choices); a repeatable one, which typer
cannot type as a list of literals, as :func:`choice_enum`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import typer
from rich.markup import escape

__all__ = [
    "ACCEL_METRICS",
    "ACCEL_MODES",
    "AMP_MODES",
    "ANCHOR_FEATURES",
    "BRIDGE_POOLING_CHOICES",
    "CAMERA_MAP_HELP",
    "DATASET_HELP",
    "EPISODES_FORMS",
    "EPISODES_HELP",
    "FORMATS",
    "FUSION_MODES",
    "METHODS",
    "MIRRORS",
    "NOISE_HELP",
    "OBJECTIVES",
    "OVERWRITE_HELP",
    "PHASES",
    "POLICY_HELP",
    "POLICY_KINDS",
    "POOLINGS",
    "PROJECTIONS",
    "PYBULLET_TASKS",
    "RETENTION_LOSSES",
    "RUN_MODES",
    "SOURCES",
    "STEP_MODES",
    "STORE_DTYPES",
    "SUITES",
    "SUITE_HELP",
    "Suite",
    "choice_enum",
    "interrupted",
    "wrote",
]

# cache
POLICY_KINDS = ("hidden_feature", "hidden_state", "token_level", "bridge")
POOLINGS = ("mean_image_tokens", "masked_mean", "first", "last", "none")
BRIDGE_POOLING_CHOICES = ("masked_mean", "first", "last", "none")  # the bridge recipe's poolings
STORE_DTYPES = ("float16", "bfloat16", "float32")
# accel
ACCEL_MODES = ("original", "uniform", "optimal")
ACCEL_METRICS = ("cosine", "l1", "l2", "mse")
# attention
RUN_MODES = ("minmax", "log")
PHASES = ("prefix", "suffix")
STEP_MODES = ("mean", "last")
# align
OBJECTIVES = ("infonce", "spatial_forcing")
FUSION_MODES = ("softmax", "gate", "moe")
AMP_MODES = ("none", "bf16", "fp16")
SOURCES = ("rgb", "points", "student", "raw", "blind")
# retain
METHODS = ("plain", "fixed", "pcgrad", "agem", "craft")
PROJECTIONS = ("conflict", "active")
RETENTION_LOSSES = ("mse", "cosine")
ANCHOR_FEATURES = ("all", "action")  # retain train --anchor-features
# sim, train
SUITES = ("pybullet", "metaworld")  # the simulators (models.diffusion's config SUITES, less None)
FORMATS = ("droid", "lerobot")
PYBULLET_TASKS = ("reach", "put_in_tray", "hover", "lift")

EPISODES_FORMS = (
    "droid:PATH (a DROID episode folder or a tree of them), lerobot:PATH (a LeRobot v3.0 dataset root), "
    "or PATH (either of the two, format detected)"
)
EPISODES_HELP = f"Episodes: {EPISODES_FORMS}."  # the dataset syntax of every command, less synthetic:N
DATASET_HELP = f"synthetic:N (N samples of the policy's example inputs), {EPISODES_FORMS}."
CAMERA_MAP_HELP = "Dataset camera -> policy camera, e.g. side=varied_camera_1,wrist=hand_camera (episode datasets)."

# "module:NAME" of the library -> the copy above (a dict's copy holds its keys)
MIRRORS = {
    "policylens.anchors:POLICY_KINDS": POLICY_KINDS,
    "policylens.anchors:DATASET_HELP": DATASET_HELP,
    "policylens.tap:POOLINGS": POOLINGS,
    "policylens.anchors:BRIDGE_POOLING_CHOICES": BRIDGE_POOLING_CHOICES,
    "policylens.store:STORE_DTYPES": STORE_DTYPES,
    "policylens.accel:MODES": ACCEL_MODES,
    "policylens.accel:METRICS": ACCEL_METRICS,
    "policylens.attention:RUN_MODES": RUN_MODES,
    "policylens.attention:PHASES": PHASES,
    "policylens.attention:STEP_MODES": STEP_MODES,
    "policylens.align:OBJECTIVES": OBJECTIVES,
    "policylens.align:FUSION_MODES": FUSION_MODES,
    "policylens.align:AMP_MODES": AMP_MODES,
    "policylens.align:SOURCES": SOURCES,
    "policylens.retain:METHODS": METHODS,
    "policylens.retain:PROJECTIONS": PROJECTIONS,
    "policylens.retain:RETENTION_LOSSES": RETENTION_LOSSES,
    "policylens.retain:ANCHOR_FEATURES": ANCHOR_FEATURES,
    "policylens.sim.metaworld:FORMATS": FORMATS,
    "policylens.sim.pybullet:TASKS": PYBULLET_TASKS,
}

POLICY_HELP = "Built-in policy name or checkpoint directory."
OVERWRITE_HELP = "Replace the run in --out, whatever its settings (default: resume the same run, refuse another)."
SUITE_HELP = escape('Simulator (metaworld needs pip install -e ".[metaworld]").')  # Rich markup eats [...]
Suite = Literal[SUITES]
NOISE_HELP = "DART noise std (m) added to the executed expert xyz; the recorded labels stay clean."


def choice_enum(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A repeatable option's choices, straight from the library's tuple of names."""
    return StrEnum(name, [(v, v) for v in values])


def interrupted(exc: BaseException) -> typer.Exit:
    """Say why the run stopped (its state is saved) and exit 128 + the signal: 130 / 143."""
    typer.echo(f"interrupted: {exc}", err=True)
    return typer.Exit(128 + getattr(exc, "signum", 2))


def wrote(if_exists: str, episodes: int, kept: int) -> str:
    """'wrote 6', 'appended 6', or 'wrote 1 more of 6' when an interrupted run is finished."""
    if if_exists == "append":
        return f"appended {episodes}"
    return f"wrote {episodes - kept} more of {episodes}" if kept and if_exists == "error" else f"wrote {episodes}"
