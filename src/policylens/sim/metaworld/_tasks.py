"""MetaWorld task names and their scripted experts (``metaworld.policies``).

The expert of a task is looked up in ``metaworld.policies.ENV_POLICY_MAP`` when the installed
metaworld has it, else derived from the task name (``pick-place-v3`` ->
``SawyerPickPlaceV3Policy``). Names that do not follow the rule are listed in ``_EXPERT_ALIASES``:
``peg-insert-side-v3`` is solved by ``SawyerPegInsertionSideV3Policy``.
"""

from __future__ import annotations

import difflib

from ._require import require_metaworld

_EXPERT_ALIASES = {"peg-insert-side": "PegInsertionSide"}


def list_tasks() -> list[str]:
    """The MetaWorld v3 task names this installation knows (50 in metaworld 3.1), sorted."""
    return sorted(require_metaworld().ALL_V3_ENVIRONMENTS)


def check_task(task: str, param: str = "task") -> str:
    """``task`` if MetaWorld knows it; else a ValueError naming ``param``, close matches and every task."""
    known = list_tasks()
    if task in known:
        return task
    close = difflib.get_close_matches(str(task), known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"{param}={task!r} is not a MetaWorld task.{hint} Known tasks: {', '.join(known)}")


def expert_class_name(task: str) -> str:
    """The ``metaworld.policies`` class name derived from a task name (without looking it up)."""
    stem, _, version = task.rpartition("-")
    camel = _EXPERT_ALIASES.get(stem) or "".join(part.capitalize() for part in stem.split("-"))
    return f"Sawyer{camel}{version.upper()}Policy"


def expert_class(task: str) -> type:
    """The scripted expert class of ``task``."""
    check_task(task)
    policies = require_metaworld().policies
    table = getattr(policies, "ENV_POLICY_MAP", {})
    cls = table.get(task) or getattr(policies, expert_class_name(task), None)
    if cls is None:
        raise ValueError(
            f"task={task!r}: metaworld.policies has no scripted expert for it (looked for "
            f"{expert_class_name(task)}); pass a policy of your own instead of 'expert'"
        )
    return cls


def instruction(task: str) -> str:
    """A short instruction derived from the task name: ``pick-place-v3`` -> ``"pick place"``."""
    return task.rpartition("-")[0].replace("-", " ")
