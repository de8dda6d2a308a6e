"""Simulated Panda table-top episodes: scenes, cameras, tasks, scripted experts, generation, evaluation."""

from ..._intervals import EvalResult, wilson_interval
from .._agent import ChunkedPolicy  # the one agent class of every simulator, exported here too
from .._resume import GenerationInterrupted, finished_episodes
from ._camera import PinholeCamera, look_at, project
from ._env import CAMERAS, CONTROL_HZ, STATE_DIM, SUBSTEPS, SimEnv
from ._evaluate import evaluate_policy, render_settings
from ._experts import ExpertPolicy, expert_action
from ._generate import generate_episodes, layout_seed, make_training_episodes
from ._record import record_episode
from ._scene import COLOURS, SHAPES, ObjectSpec, SceneSpec
from ._tasks import TASKS, get_task

__all__ = [
    "CAMERAS",
    "COLOURS",
    "CONTROL_HZ",
    "SHAPES",
    "STATE_DIM",
    "SUBSTEPS",
    "TASKS",
    "ChunkedPolicy",
    "EvalResult",
    "ExpertPolicy",
    "GenerationInterrupted",
    "ObjectSpec",
    "PinholeCamera",
    "SceneSpec",
    "SimEnv",
    "evaluate_policy",
    "expert_action",
    "finished_episodes",
    "generate_episodes",
    "get_task",
    "layout_seed",
    "look_at",
    "make_training_episodes",
    "project",
    "record_episode",
    "render_settings",
    "wilson_interval",
]
