"""Simulated Panda table-top episodes: scenes, cameras, tasks, scripted experts, generation, evaluation."""

from ..._intervals import EvalResult, wilson_interval
from ._camera import PinholeCamera, look_at, project
from ._env import CAMERAS, CONTROL_HZ, STATE_DIM, SUBSTEPS, SimEnv
from ._evaluate import ChunkedPolicy, evaluate_policy
from ._experts import ExpertPolicy, expert_action
from ._generate import generate_episodes, layout_seed, make_training_episodes
from ._record import record_episode
from ._resume import GenerationInterrupted, finished_episodes
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
    "wilson_interval",
]
