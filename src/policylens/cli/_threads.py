"""``--threads`` for every compute command: how many CPU threads torch uses, set before the work.

torch starts with one intra-op thread per core. When several processes share the cores (torchrun
ranks on one node, a test run beside a benchmark) each one still takes every core, and the
oversubscribed threads spin against each other: a small model then runs slower with more threads.
The default here is the cores this process may use divided by the processes torchrun started on
this node (``LOCAL_WORLD_SIZE``); timing commands default to one thread (small models at batch 1
time most steadily there). Every command says which count it used.
"""

from __future__ import annotations

import os

import typer

__all__ = ["THREADS_HELP", "apply_threads", "default_threads", "threads_option"]

THREADS_HELP = (
    "CPU threads for torch \\[default: the cores available / processes on this node; "
    "also POLICYLENS_THREADS]. Fewer than the cores when other work shares them."
)
THREADS_ENV = "POLICYLENS_THREADS"


def default_threads() -> int:
    """Cores this process may use, shared among torchrun's processes on this node (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local)


def threads_option(help: str = THREADS_HELP) -> typer.models.OptionInfo:
    """The ``--threads`` option (None: :func:`default_threads`, or ``POLICYLENS_THREADS``)."""
    return typer.Option(None, "--threads", min=1, help=help)


def apply_threads(threads: int | None, default: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: ``POLICYLENS_THREADS``, then ``default``,
    then :func:`default_threads`) and return the count used."""
    import torch

    if threads is None:
        env = os.environ.get(THREADS_ENV)
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise typer.BadParameter(f"{THREADS_ENV}={env!r}: use a whole number >= 1") from None
        else:
            threads = default if default is not None else default_threads()
    if threads < 1:
        raise typer.BadParameter(f"--threads {threads}: use a whole number >= 1")
    torch.set_num_threads(threads)
    return threads
