"""runs: run directories, checkpoints and the weights hash — what every trainer and job shares.

- run directories (``_run_dir``): ``run.json`` records a run's settings; the same settings resume,
  others are refused unless ``overwrite``;
- the training state (``_train_state``, ``_rng_state``): model, optimiser and every random state in
  safetensors + JSON, so a resumed run is the uninterrupted one; ``_stop_signal`` saves it on
  SIGINT / SIGTERM;
- checkpoints (``_checkpoint``, ``_policy_registry``): ``config.json`` + ``model.safetensors``, policy
  types registered by the packages that define them;
- ``weights_hash`` (``_weights_hash``): ``"sha256:<hex>"`` of a model's weights.

This package imports torch, numpy, safetensors and the standard library only (no model, no job).
"""

from ._checkpoint import (
    CONFIG_FILE,
    REFETCH,
    WEIGHTS_FILE,
    check_safetensors,
    fit_state,
    load_checkpoint,
    read_checkpoint,
    read_checkpoint_config,
    read_safetensors,
    save_checkpoint,
)
from ._distributed import Dist, distributed, env_world, shard
from ._policy_registry import (
    PolicyType,
    list_policy_names,
    list_policy_types,
    policy_type,
    policy_type_of,
    register_policy_name,
    register_policy_type,
)
from ._rng_state import Generators, join_generators, restore_rng_state, rng_state
from ._run_dir import (
    RUN_FILE,
    RUN_FORMAT,
    RUN_OUTPUTS,
    TRAINING_RUN,
    RunDirError,
    RunKind,
    check_run_dir,
    claim_run_dir,
    clear_run_dir,
    recorded_settings,
)
from ._stop_signal import TrainingInterrupted, stop_on_signal
from ._train_state import RESTATE, load_train_extra, load_train_state, save_train_state, trained_steps
from ._weights_hash import weights_hash

__all__ = [
    "CONFIG_FILE",
    "REFETCH",
    "RESTATE",
    "RUN_FILE",
    "RUN_FORMAT",
    "RUN_OUTPUTS",
    "TRAINING_RUN",
    "WEIGHTS_FILE",
    "Dist",
    "Generators",
    "PolicyType",
    "RunDirError",
    "RunKind",
    "TrainingInterrupted",
    "check_run_dir",
    "check_safetensors",
    "claim_run_dir",
    "clear_run_dir",
    "distributed",
    "env_world",
    "fit_state",
    "join_generators",
    "list_policy_names",
    "list_policy_types",
    "load_checkpoint",
    "load_train_extra",
    "load_train_state",
    "policy_type",
    "policy_type_of",
    "read_checkpoint",
    "read_checkpoint_config",
    "read_safetensors",
    "recorded_settings",
    "register_policy_name",
    "register_policy_type",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "save_train_state",
    "shard",
    "stop_on_signal",
    "trained_steps",
    "weights_hash",
]
