"""MetaWorld's scripted experts as batch policies (``act(states (n, 39), slots) -> (n, 4)``).

The experts are pure functions of the observation, so a batch is a loop over its rows and
``reset`` has nothing to forget. They warn (``UserWarning``) when their gains saturate the
action range, on most steps of most tasks; that one message is silenced here, nothing else.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._tasks import expert_class

_SATURATION = r"Constant\(s\) may be too high"


class MetaWorldExpert:
    """The scripted expert of ``task`` (``metaworld.policies``)."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.policy = expert_class(task)()

    def reset(self, slots) -> None:
        """Nothing to forget: the experts keep no state between steps."""

    def act(self, states: np.ndarray, slots=None) -> np.ndarray:
        """(n, 39) observations -> (n, 4) actions, clipped to the action space [-1, 1] as the env clips them
        (some experts, reach's among them, return larger values)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SATURATION, category=UserWarning)
            actions = [self.policy.get_action(np.asarray(s, dtype=np.float64)) for s in np.atleast_2d(states)]
        return np.clip(np.asarray(actions, dtype=np.float32).reshape(-1, 4), -1.0, 1.0)
