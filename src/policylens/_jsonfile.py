"""Read a JSON file that policylens or its user wrote, with an error that names the file.

A truncated, non-UTF-8 or non-object file raises ``error`` (``ValueError`` unless the caller
passes its own type, e.g. ``EpisodeFormatError``) naming the file, where it broke and what the
file should hold — never a bare ``JSONDecodeError``.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_json_file"]


def read_json_file(path: str | Path, what: str, error: type[Exception] = ValueError) -> dict:
    """The JSON object in ``path``; ``what`` says what the file should hold (for the error)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); expected {what}. "
            "The file is damaged or not the file the reader expects."
        ) from e
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror}); expected {what}") from e
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); expected {what}. "
            "The file is truncated or damaged: re-copy or re-export it."
        ) from e
    if not isinstance(value, dict):
        raise error(f"{path} holds a JSON {type(value).__name__}; expected an object: {what}")
    return value
