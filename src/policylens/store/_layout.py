"""Where things live inside a store directory, and chunk / rank / range arithmetic.

Chunk ``c`` of every field covers samples ``[c * chunk_rows, min((c + 1) * chunk_rows, N))``.
A chunk is complete when ``done/chunk-<c>`` exists; that marker is written only after the
chunk's data files of *all* fields have been written, so a SIGKILL at any point leaves at
most unfinished chunks without a marker, which a resumed build recomputes. An interrupted
build (SIGINT / SIGTERM) also writes the chunk it was filling, padded, and then
``done/part-<c>`` holding how many of its rows are computed; a resumed build starts that
chunk after them.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = "data"
DONE = "done"
PART = "part-"


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


def part_marker(root: str | os.PathLike, chunk: int) -> Path:
    return Path(root) / DONE / f"{PART}{chunk:08d}"


def part_rows(root: str | os.PathLike, chunk: int) -> int:
    """Rows of ``chunk`` an interrupted build kept (0 when it has no readable partial marker)."""
    try:
        text = part_marker(root, chunk).read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def partial_chunks(root: str | os.PathLike) -> dict[int, int]:
    """``{chunk: rows kept}`` of the chunks an interrupted build left unfinished (done ones excluded)."""
    d = Path(root) / DONE
    if not d.is_dir():
        return {}
    ids = [int(p.name[len(PART) :]) for p in d.iterdir() if p.name.startswith(PART) and p.name[len(PART) :].isdigit()]
    done = done_chunks(root)
    rows = {c: part_rows(root, c) for c in ids if c not in done}
    return {c: k for c, k in rows.items() if k > 0}


def mark_partial(root: str | os.PathLike, chunk: int, rows: int) -> None:
    """Record atomically that the first ``rows`` rows of ``chunk`` are written (data files first)."""
    path = part_marker(root, chunk)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{rows}\n")
    os.replace(tmp, path)


def kept_ranges(done: set[int], partial: dict[int, int], chunk_rows: int, num_samples: int) -> list[list[int]]:
    """Sorted half-open sample ranges that can be read: the done chunks and the kept rows of partial ones."""
    spans = sorted(
        [chunk_range(c, chunk_rows, num_samples) for c in done]
        + [(c * chunk_rows, c * chunk_rows + k) for c, k in partial.items() if c not in done]
    )
    out: list[list[int]] = []
    for start, stop in spans:
        if out and out[-1][1] == start:
            out[-1][1] = stop
        else:
            out.append([start, stop])
    return out


def gaps(ranges: list[list[int]], num_samples: int) -> list[list[int]]:
    """The sample ranges of ``[0, num_samples)`` that sorted, disjoint ``ranges`` leave out."""
    out, at = [], 0
    for start, stop in ranges:
        if start > at:
            out.append([at, start])
        at = stop
    return [*out, [at, num_samples]] if at < num_samples else out


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
