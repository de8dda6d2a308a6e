"""``open_episodes``: every episode under a dataset spec, whatever its format.

``droid:PATH`` is one DROID episode folder or a tree of them (both layouts the reader detects),
``lerobot:PATH`` a LeRobot v3.0 dataset root; a bare PATH is detected from what it holds.
"""

from __future__ import annotations

from pathlib import Path

from ._episode import Episode, EpisodeFormatError

__all__ = ["open_episodes"]

FORMS = "droid:PATH (an episode folder or a tree of them) or lerobot:PATH (a LeRobot v3.0 dataset root)"


def _droid(root: Path) -> list[Episode]:
    from .droid import open_episode

    dirs = [root] if (root / "trajectory.h5").is_file() else sorted(p.parent for p in root.rglob("trajectory.h5"))
    if not dirs:
        raise EpisodeFormatError(f"{root}: no trajectory.h5 under it; pass a DROID episode folder or a tree of them")
    return [open_episode(d) for d in dirs]


def _lerobot(root: Path) -> list[Episode]:
    from .lerobot import open_dataset

    data = open_dataset(root)
    return [data[i] for i in range(len(data))]


def open_episodes(spec: str | Path) -> list[Episode]:
    """The episodes of ``spec``: ``droid:PATH``, ``lerobot:PATH`` or a PATH holding either."""
    text = str(spec)
    kind, sep, arg = text.partition(":")
    if sep and kind in ("droid", "lerobot") and arg:
        return _droid(Path(arg)) if kind == "droid" else _lerobot(Path(arg))
    path = Path(text)
    if (path / "meta" / "info.json").is_file():
        return _lerobot(path)
    if path.is_dir():
        return _droid(path)
    raise EpisodeFormatError(f"episodes={text!r}: not a folder; expected {FORMS}")
