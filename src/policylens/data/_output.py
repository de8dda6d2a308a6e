"""Output directories of generated datasets: refuse a non-empty one, or clear it, or append to it.

DROID folder names come from the episode index, so a second run into the same directory would
write into the first run's folders and leave its longer episodes' extra frames behind; a LeRobot
dataset would be replaced. ``if_exists``: ``"error"`` (the default of every generator),
``"overwrite"`` (clear a dataset a generator wrote, nothing else) or ``"append"`` (DROID only:
the index of the first new episode continues the numbering). Shared by the pybullet and
MetaWorld generators.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

IF_EXISTS = ("error", "overwrite", "append")
_TOP_LEVEL = {"droid": {"success", "failure"}, "lerobot": {"meta", "data", "videos"}}


def _droid_indices(root: Path) -> list[int]:
    """Episode indices of the ``{success|failure}/{date}/{stamp}`` folders that ``episode_dirname`` named."""
    from .droid._writer import episode_dirname  # h5py and PyAV only once a DROID dataset is appended to

    base = dt.datetime.strptime(episode_dirname(0)[1], "%Y-%m-%d-%Hh-%Mm-%Ss")
    indices = []
    for folder in root.glob("*/*/*"):
        try:
            when = dt.datetime.strptime(folder.name, "%Y-%m-%d-%Hh-%Mm-%Ss")
        except ValueError:
            continue
        indices.append(int((when - base).total_seconds() // 60))
    return indices


def prepare_output(out: Path, fmt: str, if_exists: str) -> int:
    """Check (and for ``"overwrite"`` clear) ``out``; the index of the first episode to write."""
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists={if_exists!r} is unknown; choose from {list(IF_EXISTS)}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {out} is a file; pass a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return 0
    found = next((f for f, names in _TOP_LEVEL.items() if set(entries) <= names), None)
    if found is None:
        raise FileExistsError(
            f"out_dir {out} holds {entries[:5]}, which is not a dataset that generate_episodes wrote; "
            "pick an empty or new directory (nothing there is deleted or merged)"
        )
    if if_exists == "error":
        raise FileExistsError(
            f"out_dir {out} already holds a {found} dataset; pass --overwrite (if_exists='overwrite') to "
            "replace it, --append (if_exists='append', DROID only) to add episodes, or another --out"
        )
    if if_exists == "overwrite":
        shutil.rmtree(out)
        return 0
    if fmt == "lerobot" or found == "lerobot":
        raise ValueError(
            f"out_dir {out}: appending to a LeRobot dataset is not supported (the writer writes one data and one "
            "video file per dataset); regenerate with more --episodes and --overwrite (the first episodes come "
            "out the same under the same --seed), or write to another --out"
        )
    return max(_droid_indices(out), default=-1) + 1
