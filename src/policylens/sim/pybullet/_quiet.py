"""Silence C-level stdout while pybullet connects (it prints ``argv[0]=`` on every DIRECT connect)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys


@contextlib.contextmanager
def quiet_c_stdout():
    """Redirect file descriptor 1 to /dev/null for the block; a no-op when stdout has no fd."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)  # flush C buffers while still pointed at /dev/null
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
