"""Read the small files around an episode (JSON, text, parquet) with errors that name the file.

Every reader goes through these, so a truncated ``info.json`` or a damaged parquet file gives an
``EpisodeFormatError`` that names the file and what it should hold, never a bare
``JSONDecodeError`` / ``UnicodeDecodeError`` / ``ArrowInvalid``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .._jsonfile import read_json_file
from ._episode import EpisodeFormatError

__all__ = ["read_json", "read_parquet", "read_text"]


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; ``what`` says what the file should hold (for the error)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EpisodeFormatError(
            f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); expected {what}. "
            "The file is damaged or not the file the reader expects."
        ) from e
    except OSError as e:
        raise EpisodeFormatError(f"{path} cannot be read ({e.strerror}); expected {what}") from e


def read_json(path: Path, what: str) -> dict:
    """The JSON object in ``path``; a truncated or non-object file raises naming it."""
    return read_json_file(path, what, EpisodeFormatError)


def read_parquet(path: Path, what: str) -> pa.Table:
    """The table in ``path``; a missing, truncated or non-parquet file raises naming it."""
    if not Path(path).is_file():
        raise EpisodeFormatError(f"{path} is missing; expected {what}")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise EpisodeFormatError(
            f"{path} is not a readable parquet file ({e}); expected {what}. "
            "The file is truncated or damaged: re-copy or re-export it."
        ) from e
