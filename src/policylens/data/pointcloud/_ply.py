"""PLY read/write (binary little-endian and ASCII) for point clouds with xyz, rgb, uv, object id.

Vertex properties written: ``float x y z``, ``uchar red green blue``, ``int u v``,
``int object_id``.  The reader accepts any vertex property order and the standard PLY scalar
types; missing rgb / uv / object_id come back as zeros / -1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._episode import EpisodeFormatError
from ._backproject import PointCloud

_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_FIELDS = [
    ("x", "float"),
    ("y", "float"),
    ("z", "float"),
    ("red", "uchar"),
    ("green", "uchar"),
    ("blue", "uchar"),
    ("u", "int"),
    ("v", "int"),
    ("object_id", "int"),
]


def write_ply(path: str | Path, cloud: PointCloud, binary: bool = True) -> None:
    """Write ``cloud`` to ``path`` as binary little-endian (default) or ASCII PLY."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype([(n, "<" + _TYPES[t]) for n, t in _FIELDS])
    rec = np.empty(len(cloud), dtype=dtype)
    for i, axis in enumerate("xyz"):
        rec[axis] = cloud.xyz[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        rec[c] = cloud.rgb[:, i]
    rec["u"], rec["v"], rec["object_id"] = cloud.uv[:, 0], cloud.uv[:, 1], cloud.object_id
    fmt = "binary_little_endian" if binary else "ascii"
    header = [
        "ply",
        f"format {fmt} 1.0",
        "comment policylens point cloud (uv = pixel column, row)",
        f"element vertex {len(cloud)}",
    ]
    header += [f"property {t} {n}" for n, t in _FIELDS] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(rec.tobytes())
        else:
            lines = []
            for r in rec:
                vals = [repr(float(r[n])) if t == "float" else str(int(r[n])) for n, t in _FIELDS]
                lines.append(" ".join(vals))
            f.write(("\n".join(lines) + ("\n" if lines else "")).encode("ascii"))


def read_ply(path: str | Path) -> PointCloud:
    """Read a PLY point cloud (binary little/big endian or ASCII)."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"PLY file {path} does not exist")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise EpisodeFormatError(f"{path} is not a PLY file: the first line must be 'ply'")
        fmt, n, props, element = None, 0, [], None
        while True:
            line = f.readline()
            if not line:
                raise EpisodeFormatError(f"{path}: header has no 'end_header' line")
            words = line.decode("ascii").split()
            if not words or words[0] == "comment":
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                element = words[1]
                if element == "vertex":
                    n = int(words[2])
            elif words[0] == "property" and element == "vertex":
                if words[1] == "list" or words[1] not in _TYPES:
                    raise EpisodeFormatError(f"{path}: vertex property {' '.join(words[1:])} is not supported")
                props.append((words[2], _TYPES[words[1]]))
        if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
            raise EpisodeFormatError(f"{path}: format {fmt!r} is not supported")
        end = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(name, end + t) for name, t in props])
        if fmt == "ascii":
            rows = np.loadtxt(f, max_rows=n, ndmin=2) if n else np.zeros((0, len(props)))
            rec = np.empty(n, dtype=dtype)
            for i, (name, _) in enumerate(props):
                rec[name] = rows[:, i]
        else:
            rec = np.frombuffer(f.read(n * dtype.itemsize), dtype=dtype, count=n)
    names = set(dtype.names)
    if not {"x", "y", "z"} <= names:
        raise EpisodeFormatError(f"{path}: vertices need properties x, y, z; found {sorted(names)}")
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    rgb = (
        np.stack([rec[c] for c in ("red", "green", "blue")], axis=1)
        if {"red", "green", "blue"} <= names
        else np.zeros((n, 3))
    )
    uv = np.stack([rec["u"], rec["v"]], axis=1) if {"u", "v"} <= names else np.full((n, 2), -1)
    ids = rec["object_id"] if "object_id" in names else np.full(n, -1)
    return PointCloud(xyz, rgb, uv, ids)
