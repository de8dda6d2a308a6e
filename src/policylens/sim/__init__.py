"""Simulators and the agents that act in them (floor 4: above ``data`` and ``models``).

``pybullet`` (the Panda table-top tasks ``reach`` / ``put_in_tray`` / ``hover``) and ``metaworld`` (the optional
MetaWorld v3 suite) each hold scenes, tasks, scripted experts, recording and closed-loop evaluation.
Both write their episodes through ``policylens.data``'s formats and layout seeds from ``_seeds``
(training and evaluation layouts disjoint); ``_resume`` lets an interrupted generation continue.
"""

from ._agent import NOISE, ChunkedPolicy, DiffusionChunks, VLAChunks, diffusion_agent, vla_agent
from ._load import SUITES, load_agent
from ._recipes import (
    check_metaworld_run,
    check_reach_run,
    metaworld_run_settings,
    reach_run_settings,
    train_metaworld_policy,
    train_reach_policy,
)
from ._seeds import eval_layout_seed, train_layout_seed

__all__ = [
    "NOISE",
    "SUITES",
    "ChunkedPolicy",
    "DiffusionChunks",
    "VLAChunks",
    "check_metaworld_run",
    "check_reach_run",
    "diffusion_agent",
    "eval_layout_seed",
    "load_agent",
    "metaworld_run_settings",
    "reach_run_settings",
    "train_layout_seed",
    "train_metaworld_policy",
    "train_reach_policy",
    "vla_agent",
]
