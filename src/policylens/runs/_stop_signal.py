"""Save on a signal: :func:`stop_on_signal` turns SIGINT / SIGTERM into a flag that a loop checks
after each step, so it saves its state and raises :class:`TrainingInterrupted` instead of dying
mid-step; a second signal interrupts at once. Under torchrun a Ctrl-C reaches each worker twice (from
the terminal, then forwarded by torchrun's agent, which kills the workers itself 30 s later): there a
loop passes ``escalate=False`` and later signals only keep the flag.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["TrainingInterrupted", "stop_on_signal"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving its state; rerun the same command to resume."""

    def __init__(self, signum: int, step: int, directory: str | Path) -> None:
        self.signum, self.step, self.directory = signum, step, Path(directory)
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: state saved in {self.directory}/train_state.*; rerun the same command to resume"
        )


class _StopFlag:
    signum: int | None = None


@contextmanager
def stop_on_signal(
    enabled: bool = True, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM), escalate: bool = True
) -> Iterator[_StopFlag]:
    """Within the block a first SIGINT / SIGTERM only sets ``flag.signum`` (the loop saves and
    stops after its current step); a second one interrupts at once, unless not ``escalate``. Not
    ``enabled``, or outside the main thread (where Python cannot install handlers), the flag never
    trips."""
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: object) -> None:
        if flag.signum is not None and escalate:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped without saving")
        flag.signum = flag.signum or signum

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
