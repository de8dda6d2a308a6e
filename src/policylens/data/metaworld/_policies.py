"""Batch policies for the MetaWorld evaluator: a diffusion policy adapter and the CLI's loader.

A batch policy has ``act(states (n, obs_dim), slots (n,)) -> (n, action_dim)``, called once per
control step with the observations of the environments still running (``slots`` names them), and
optionally ``reset(slots)``, called when those slots start a new episode.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from ._env import ACTION_DIM, STATE_DIM
from ._experts import MetaWorldExpert

SUITE = "metaworld"


class DiffusionBatchPolicy:
    """A ``TinyDiffusionPolicy`` over many environments: per-slot observation history and action queue.

    At a control step every slot whose queue is empty gets a new chunk from ONE ``predict_action``
    call over those slots; the chunk's ``n_action_steps`` actions from the current step on are then
    executed one per step. Noise comes from one generator seeded with ``seed``, so a run is
    deterministic for a given batch size (another batch size draws the noise in another order).
    """

    def __init__(self, policy, seed: int = 0, n_action_steps: int | None = None, **predict_kwargs) -> None:
        import torch

        c = policy.config
        self.k = n_action_steps or c.n_action_steps
        if not 1 <= self.k <= c.horizon - c.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps={self.k}: expected 1..{c.horizon - c.n_obs_steps + 1} (horizon {c.horizon} - "
                f"n_obs_steps {c.n_obs_steps} + 1)"
            )
        self.policy, self.kwargs = policy, predict_kwargs
        self.generator = torch.Generator().manual_seed(int(seed))
        self.history: dict[int, deque] = {}
        self.queue: dict[int, list[np.ndarray]] = {}
        self.calls = 0

    def reset(self, slots) -> None:
        for s in np.atleast_1d(slots).tolist():
            self.history.pop(s, None)
            self.queue.pop(s, None)

    def act(self, states: np.ndarray, slots) -> np.ndarray:
        import torch

        c = self.policy.config
        states = np.asarray(states, dtype=np.float32)
        slots = np.atleast_1d(slots).tolist()
        if states.ndim != 2 or states.shape[1] != c.obs_dim or len(states) != len(slots):
            raise ValueError(f"states has shape {states.shape}; expected ({len(slots)}, obs_dim={c.obs_dim})")
        for s, x in zip(slots, states, strict=True):
            if s not in self.history:
                self.history[s] = deque([x] * c.n_obs_steps, maxlen=c.n_obs_steps)
            else:
                self.history[s].append(x)
        need = [s for s in slots if not self.queue.get(s)]
        if need:
            obs = torch.from_numpy(np.stack([np.stack(self.history[s]) for s in need]))  # (m, To, O)
            chunk = self.policy.predict_action(obs, generator=self.generator, **self.kwargs).numpy()  # (m, T, A)
            start = c.n_obs_steps - 1
            for s, row in zip(need, chunk, strict=True):
                self.queue[s] = list(row[start : start + self.k])
            self.calls += 1
        return np.stack([self.queue[s].pop(0) for s in slots])


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


def load_agent(spec: str, task: str, seed: int = 0, **predict_kwargs):
    """The batch policy for ``task``: ``"expert"`` -> its scripted expert; else a state-based
    ``TinyDiffusionPolicy`` checkpoint found by :func:`resolve_policy` and ``policylens.models.load_policy``
    (a run directory, a directory of per-task runs, ``metaworld/<task>`` or ``"metaworld"``)."""
    if spec == "expert":
        return MetaWorldExpert(task)
    from policylens.models import TinyDiffusionPolicy, load_policy

    where = resolve_policy(spec, task)
    policy = load_policy(where)
    if not isinstance(policy, TinyDiffusionPolicy):
        raise ValueError(
            f"policy {where} is a {type(policy).__name__}; MetaWorld evaluation takes state-based "
            "TinyDiffusionPolicy checkpoints or 'expert'"
        )
    check_policy_task(policy.config, task, str(Path(where)))
    return DiffusionBatchPolicy(policy, seed=seed, **predict_kwargs)
