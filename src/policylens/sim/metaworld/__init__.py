"""MetaWorld as a second simulator (optional extra: ``pip install -e ".[metaworld]"``).

State-based MetaWorld v3 tasks through gymnasium's ``Meta-World/MT1`` entry point, layouts chosen
by seed (training and evaluation seeds disjoint), the scripted experts of ``metaworld.policies``,
a batched closed-loop evaluator, expert episode generation (in memory for trainers, or written as
LeRobot v3.0 / DROID raw), and camera rendering through MuJoCo + OSMesa as an option. Importing
this package does not import metaworld; the functions do, and raise ``MetaWorldUnavailable``
naming the install command when it is missing.
"""

from .._seeds import eval_layout_seed, train_layout_seed
from ._env import ACTION_DIM, CONTROL_HZ, STATE_DIM, MetaWorldEnv
from ._evaluate import DEFAULT_BATCH, evaluate_metaworld, evaluate_tasks
from ._experts import MetaWorldExpert
from ._export import FORMATS, droid_record, generate_episodes
from ._policies import check_policy_task, resolve_policy
from ._record import make_training_episodes, record_episode
from ._render import CAMERAS, RenderingUnavailable
from ._report import results_table
from ._require import INSTALL_HINT, MetaWorldUnavailable, require_metaworld
from ._tasks import check_task, expert_class, expert_class_name, list_tasks

__all__ = [
    "ACTION_DIM",
    "CAMERAS",
    "CONTROL_HZ",
    "DEFAULT_BATCH",
    "FORMATS",
    "INSTALL_HINT",
    "STATE_DIM",
    "MetaWorldEnv",
    "MetaWorldExpert",
    "MetaWorldUnavailable",
    "RenderingUnavailable",
    "check_policy_task",
    "check_task",
    "droid_record",
    "eval_layout_seed",
    "evaluate_metaworld",
    "evaluate_tasks",
    "expert_class",
    "expert_class_name",
    "generate_episodes",
    "list_tasks",
    "make_training_episodes",
    "record_episode",
    "require_metaworld",
    "resolve_policy",
    "results_table",
    "train_layout_seed",
]
