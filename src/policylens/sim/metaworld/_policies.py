"""Which checkpoint a MetaWorld evaluation runs, and whether it was trained for that task.

``policylens.sim.load_agent(spec, "metaworld", task)`` resolves ``spec`` here, checks the config's
suite, task and sizes, and runs the policy as a batched ``policylens.sim.ChunkedPolicy``.
"""

from __future__ import annotations

from pathlib import Path

from ._env import ACTION_DIM, STATE_DIM

SUITE = "metaworld"


def check_policy_task(config, task: str, where: str) -> None:
    """Refuse a checkpoint whose config records another suite or task, or other observation sizes."""
    suite, trained = getattr(config, "suite", None), getattr(config, "task", None)
    if suite not in (None, SUITE):
        raise ValueError(f"policy {where} was trained on the {suite} simulator, not MetaWorld; pass --suite {suite}")
    if trained is not None and trained != task:
        raise ValueError(
            f"task={task!r}: policy {where} was trained on MetaWorld task {trained!r}; evaluate it on {trained} "
            f"or pass a policy trained on {task} (a directory of per-task runs picks <dir>/{task})"
        )
    if (config.obs_dim, config.action_dim) != (STATE_DIM, ACTION_DIM):
        raise ValueError(
            f"policy {where} reads {config.obs_dim}-D observations and writes {config.action_dim}-D actions; "
            f"MetaWorld's are {STATE_DIM}-D and {ACTION_DIM}-D"
        )


def resolve_policy(spec: str, task: str) -> str:
    """Where the policy for ``task`` is: ``"metaworld"`` -> the shipped ``metaworld/<task>``; a directory
    without ``config.json`` that has a ``<task>/`` run inside -> that run; anything else as given."""
    if spec == SUITE:
        return f"{SUITE}/{task}"
    root = Path(spec)
    if root.is_dir() and not (root / "config.json").is_file() and (root / task / "config.json").is_file():
        return str(root / task)
    return spec
