"""Where things live inside a store directory, and chunk / rank / range arithmetic.

Chunk ``c`` of every field covers samples ``[c * chunk_rows, min((c + 1) * chunk_rows, N))``.
A chunk is complete when ``done/chunk-<c>`` exists; that marker is written only after the
chunk's data files of *all* fields have been written, so a SIGKILL at any point leaves at
most unfinished chunks without a marker, which a resumed build recomputes.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = "data"
DONE = "done"


def data_dir(root: str | os.PathLike) -> Path:
    return Path(root) / DATA


def field_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / DATA / name


def chunk_file(root: str | os.PathLike, name: str, chunk: int, ndim: int) -> Path:
    """Path of one zarr v3 chunk file (default key encoding ``c/<i>/0/0...``)."""
    return field_dir(root, name).joinpath("c", str(chunk), *(["0"] * (ndim - 1)))


def marker(root: str | os.PathLike, chunk: int) -> Path:
    return Path(root) / DONE / f"chunk-{chunk:08d}"


def num_chunks(num_samples: int, chunk_rows: int) -> int:
    return (num_samples + chunk_rows - 1) // chunk_rows


def chunk_range(chunk: int, chunk_rows: int, num_samples: int) -> tuple[int, int]:
    start = chunk * chunk_rows
    return start, min(start + chunk_rows, num_samples)


def done_chunks(root: str | os.PathLike) -> set[int]:
    """Chunks that carry a done marker."""
    d = Path(root) / DONE
    if not d.is_dir():
        return set()
    return {int(p.name[6:]) for p in d.iterdir() if p.name.startswith("chunk-") and p.name[6:].isdigit()}


def mark_done(root: str | os.PathLike, chunk: int) -> None:
    """Write the done marker atomically (temp file + rename); the data must already be written."""
    path = marker(root, chunk)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write("ok\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rank_chunks(n_chunks: int, rank: int, world_size: int) -> range:
    """Contiguous, disjoint block of chunks for one rank; the blocks of all ranks cover every chunk."""
    return range(rank * n_chunks // world_size, (rank + 1) * n_chunks // world_size)


def ranges_of(chunks: set[int], chunk_rows: int, num_samples: int) -> list[list[int]]:
    """Merge chunk ids into sorted half-open sample ranges ``[[start, stop], ...]``."""
    out: list[list[int]] = []
    for c in sorted(chunks):
        start, stop = chunk_range(c, chunk_rows, num_samples)
        if out and out[-1][1] == start:
            out[-1][1] = stop
        else:
            out.append([start, stop])
    return out


def dist_env() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment variables (``(0, 1)`` when unset)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise ValueError(f"environment RANK={rank}, WORLD_SIZE={world}; expected 0 <= RANK < WORLD_SIZE.")
    return rank, world
