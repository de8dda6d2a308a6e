"""Create a store directory once, race-free when several ranks start at the same moment.

The first process to create ``.create.lock`` (``O_EXCL``) makes the zarr arrays and writes
``manifest.json`` last; the others wait for the manifest. A lock left by a killed creator
on this host is detected by its pid and taken over.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import zarr
from zarr.codecs import Crc32cCodec

from ._errors import StoreError
from ._layout import DONE, data_dir
from ._schema import MANIFEST, FieldSpec, storage_dtype, write_manifest

LOCK = ".create.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(lock: Path) -> bool:
    try:
        host, pid = lock.read_text().split(":")
    except (OSError, ValueError):
        return False
    return host == socket.gethostname() and not _pid_alive(int(pid))


def create_arrays(root: Path, fields: dict[str, FieldSpec], num_samples: int, chunk_rows: int) -> None:
    """One uncompressed zarr v3 array per field, shape ``(N, *shape)``, chunks ``(chunk_rows, *shape)``,
    each chunk followed by its crc32c (zarr's ``crc32c`` codec: the data stays memory-mappable)."""
    group = zarr.open_group(str(data_dir(root)), mode="a")
    for name, spec in fields.items():
        group.create_array(
            name,
            shape=(num_samples, *spec.shape),
            chunks=(chunk_rows, *spec.shape),
            dtype=storage_dtype(spec.dtype),
            compressors=[Crc32cCodec()],
            filters=None,
            fill_value=0,
            overwrite=True,
            config={"write_empty_chunks": True},
        )
    (root / DONE).mkdir(exist_ok=True)


def create_once(root: Path, make: Callable[[], tuple[dict, dict[str, FieldSpec]]], timeout: float = 600.0) -> None:
    """Create the store at ``root`` unless a manifest exists; ``make()`` gives ``(manifest, fields)``."""
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK
    deadline = time.monotonic() + timeout
    while not (root / MANIFEST).exists():
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _stale(lock):
                lock.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise StoreError(
                    f"store {str(root)!r}: waited {timeout:.0f} s for another process to create it "
                    f"({lock} exists, no {MANIFEST}). If no build is running, delete {lock} and retry."
                ) from None
            time.sleep(0.05)
            continue
        try:
            os.write(fd, f"{socket.gethostname()}:{os.getpid()}".encode())
            os.close(fd)
            if not (root / MANIFEST).exists():
                manifest, fields = make()
                create_arrays(root, fields, manifest["num_samples"], manifest["chunk_rows"])
                write_manifest(root, manifest)
        finally:
            lock.unlink(missing_ok=True)


def clean_stale_temps(root: Path) -> int:
    """Remove temp files (``.<name>.<pid>.tmp``) left by writers of this host that were killed."""
    removed = 0
    for tmp in root.rglob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
