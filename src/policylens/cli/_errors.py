"""Known errors: one line on stderr and exit 2; anything else keeps its traceback.

An error is *known* when the user can fix it from its message: an instance of a registered
type (``StoreError``, ``EpisodeFormatError``, :class:`CommandError`, and whatever another
module adds with :func:`register_known_error`), or a ``FileNotFoundError`` /
``FileExistsError`` / ``ValueError`` / ``KeyError`` / ``TypeError`` that policylens raised
on purpose: the innermost frame is policylens code and its line is a ``raise`` statement.
A ``KeyError`` from a plain ``d[key]`` in policylens code, or a ``ValueError`` from inside
torch, is a bug and keeps its traceback. A JSON file that policylens failed to parse is
known too; the message names the file (the ``.json`` path the reading function held).
``--debug`` or ``POLICYLENS_DEBUG=1`` shows the traceback of known errors as well.
"""

from __future__ import annotations

import json
import linecache
import os
import sys
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "EXIT_KNOWN",
    "CommandError",
    "debug_from_env",
    "format_known_error",
    "is_known_error",
    "known_error_types",
    "register_known_error",
]

DEBUG_ENV = "POLICYLENS_DEBUG"
EXIT_KNOWN = 2
ON_PURPOSE = (FileNotFoundError, FileExistsError, ValueError, KeyError, TypeError)


class CommandError(Exception):
    """A CLI command refuses its input; the message says which option, what was wrong and the fix."""


# "module:QualName" strings are resolved only when their module is already imported: an error
# of a type whose module was never loaded cannot have been raised.
_REGISTRY: list[type[BaseException] | str] = [
    CommandError,
    "policylens.store:StoreError",
    "policylens.data:EpisodeFormatError",
]


def register_known_error(exc_type: type[BaseException] | str) -> None:
    """Print errors of ``exc_type`` (a class or ``"module:QualName"``) as one line, exit 2."""
    if not isinstance(exc_type, (type, str)) or (isinstance(exc_type, str) and ":" not in exc_type):
        raise TypeError(f"register_known_error: got {exc_type!r}; expected an exception class or 'module:QualName'.")
    if exc_type not in _REGISTRY:
        _REGISTRY.append(exc_type)


def known_error_types() -> tuple[type[BaseException], ...]:
    """The registered types whose modules are imported."""
    out = []
    for entry in _REGISTRY:
        if isinstance(entry, type):
            out.append(entry)
            continue
        module, _, name = entry.partition(":")
        obj = sys.modules.get(module)
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            out.append(obj)
    return tuple(out)


def debug_from_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _innermost(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _is_policylens(tb: TracebackType) -> bool:
    name = tb.tb_frame.f_globals.get("__name__", "")
    return name == "policylens" or name.startswith("policylens.")


def _raised_on_purpose(exc: BaseException) -> bool:
    tb = _innermost(exc.__traceback__)
    if tb is None or not _is_policylens(tb):
        return False
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
    return line.startswith("raise")


def _policylens_frames(tb: TracebackType | None) -> list[TracebackType]:
    out = []
    while tb is not None:
        if _is_policylens(tb):
            out.append(tb)
        tb = tb.tb_next
    return out


def is_known_error(exc: BaseException) -> bool:
    """True for errors the user fixes from the message (see the module docstring)."""
    if isinstance(exc, known_error_types()):
        return True
    if isinstance(exc, json.JSONDecodeError):
        return bool(_policylens_frames(exc.__traceback__))
    return isinstance(exc, ON_PURPOSE) and _raised_on_purpose(exc)


def _json_file(exc: json.JSONDecodeError) -> str | None:
    """The ``.json`` path held by the innermost policylens function on the way to the failed parse."""
    for tb in reversed(_policylens_frames(exc.__traceback__)):
        for value in reversed(list(tb.tb_frame.f_locals.values())):
            if isinstance(value, (str, os.PathLike)) and str(value).endswith(".json"):
                return str(value)
    return None


def format_known_error(exc: BaseException) -> str:
    """The error as one line: its own message with line breaks folded."""
    if isinstance(exc, json.JSONDecodeError):
        where = _json_file(exc) or "a JSON file"
        msg = f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); rewrite or regenerate it"
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        msg = exc.args[0]  # str(KeyError) would quote the message
    elif isinstance(exc, OSError) and exc.filename and exc.strerror:
        msg = f"{exc.filename}: {exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
    folded = " ".join(part.strip() for part in msg.splitlines() if part.strip())
    return f"error: {folded}"
