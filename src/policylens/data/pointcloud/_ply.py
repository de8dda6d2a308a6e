"""PLY read/write (binary little-endian and ASCII) for point clouds with xyz, rgb, uv, object id.

Vertex properties written: ``float x y z``, ``uchar red green blue``, ``int u v``,
``int object_id``.  The reader accepts any vertex property order and the standard PLY scalar
types; missing rgb / uv / object_id come back as zeros / -1.  Elements before ``vertex`` are
skipped (ASCII, or binary with scalar properties).  A malformed header or body (a truncated
file, a count larger than the body, a non-numeric value) raises ``EpisodeFormatError`` naming
the file and the header line, vertex or property.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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


@dataclass
class _Element:
    name: str
    count: int
    line: str  # the header line that declared it, for errors
    props: list[tuple[str, str]] = field(default_factory=list)  # (name, numpy type code or "list")


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """Every vertex property of a PLY file (binary little/big endian or ASCII) as it is stored,
    by name (``x``, ``y``, ``z``, ``red`` ... and any others, e.g. per-point features)."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeFormatError(f"PLY file {path} does not exist")
    with open(path, "rb") as f:
        fmt, elements = _read_header(f, path)
        vertex = next((e for e in elements if e.name == "vertex"), None)
        if vertex is None:
            raise EpisodeFormatError(f"{path}: the header declares no 'element vertex N'; expected the points there")
        names = [n for n, _ in vertex.props]
        if not {"x", "y", "z"} <= set(names):
            raise EpisodeFormatError(f"{path}: vertices need properties x, y, z; found {names}")
        before = elements[: elements.index(vertex)]
        if fmt == "ascii":
            rec = _read_ascii(f.read(), path, vertex, sum(e.count for e in before))
        else:
            rec = _read_binary(f, path, fmt, vertex, before)
    return {name: np.asarray(rec[name]) for name in names}


def read_ply(path: str | Path) -> PointCloud:
    """Read a PLY point cloud (binary little/big endian or ASCII)."""
    rec = read_ply_vertices(path)
    n = len(rec["x"])
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    rgb = (
        np.stack([rec[c] for c in ("red", "green", "blue")], axis=1)
        if {"red", "green", "blue"} <= set(rec)
        else np.zeros((n, 3))
    )
    uv = np.stack([rec["u"], rec["v"]], axis=1) if {"u", "v"} <= set(rec) else np.full((n, 2), -1)
    ids = rec["object_id"] if "object_id" in rec else np.full(n, -1)
    return PointCloud(xyz, rgb, uv, ids)


def _read_header(f, path: Path) -> tuple[str, list[_Element]]:
    """Parse the header up to ``end_header``: the format and the elements with their properties."""
    if f.readline().strip() != b"ply":
        raise EpisodeFormatError(f"{path} is not a PLY file: the first line must be 'ply'")
    fmt, elements, number = None, [], 1
    while True:
        raw, number = f.readline(), number + 1
        if not raw:
            raise EpisodeFormatError(f"{path}: the header has no 'end_header' line; the file is truncated or not PLY")
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise EpisodeFormatError(
                f"{path}: header line {number} holds non-ASCII bytes ({raw[:40]!r}); a PLY header is ASCII text"
            ) from None
        words = text.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        where = f"{path}: header line {number} {text!r}"
        if words[0] == "end_header":
            break
        if words[0] == "format":
            if len(words) < 2 or words[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise EpisodeFormatError(
                    f"{where}: 'format' needs one of ascii, binary_little_endian, binary_big_endian (then 1.0)"
                )
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise EpisodeFormatError(
                    f"{where}: 'element' needs a name and a count >= 0 (e.g. 'element vertex 1024'); "
                    f"got count {words[2] if len(words) > 2 else None!r}"
                )
            elements.append(_Element(words[1], int(words[2]), text))
        elif words[0] == "property":
            if not elements:
                raise EpisodeFormatError(f"{where}: 'property' comes before any 'element' line")
            elements[-1].props.append(_property(words, where, elements[-1]))
        else:
            raise EpisodeFormatError(f"{where}: unknown header keyword {words[0]!r}")
    if fmt is None:
        raise EpisodeFormatError(f"{path}: the header has no 'format' line (ascii, binary_little_endian, ...)")
    return fmt, elements


def _property(words: list[str], where: str, element: _Element) -> tuple[str, str]:
    if len(words) >= 2 and words[1] == "list":
        if len(words) != 5:
            raise EpisodeFormatError(f"{where}: expected 'property list <count type> <item type> <name>'")
        if element.name == "vertex":
            raise EpisodeFormatError(f"{where}: list properties of vertices are not supported")
        return words[4], "list"
    if len(words) != 3:
        raise EpisodeFormatError(f"{where}: 'property' needs a type and a name, e.g. 'property float x'")
    if words[1] not in _TYPES:
        raise EpisodeFormatError(f"{where}: type {words[1]!r} is not a PLY scalar type; expected one of {list(_TYPES)}")
    if any(name == words[2] for name, _ in element.props):
        raise EpisodeFormatError(f"{where}: property {words[2]!r} appears twice in element {element.name!r}")
    return words[2], _TYPES[words[1]]


def _read_binary(f, path: Path, fmt: str, vertex: _Element, before: list[_Element]) -> np.ndarray:
    end = "<" if fmt == "binary_little_endian" else ">"
    skip = 0
    for e in before:
        if any(t == "list" for _, t in e.props):
            raise EpisodeFormatError(
                f"{path}: element {e.name!r} precedes 'vertex' and has list properties; this reader needs "
                "the vertex element first or only scalar elements before it"
            )
        skip += e.count * np.dtype([(n, end + t) for n, t in e.props]).itemsize
    dtype = np.dtype([(n, end + t) for n, t in vertex.props])
    need = vertex.count * dtype.itemsize
    have = os.fstat(f.fileno()).st_size - f.tell() - skip
    if have < need:
        raise EpisodeFormatError(
            f"{path}: '{vertex.line}' needs {need} bytes of vertex data ({vertex.count} x {dtype.itemsize}) but the "
            f"body holds {max(have, 0)}; the file is truncated or the vertex count is wrong"
        )
    f.seek(skip, os.SEEK_CUR)
    return np.frombuffer(f.read(need), dtype=dtype, count=vertex.count)


def _read_ascii(body: bytes, path: Path, vertex: _Element, skip: int) -> np.ndarray:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as e:
        raise EpisodeFormatError(f"{path}: the ASCII body holds a non-ASCII byte at offset {e.start}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()][skip : skip + vertex.count]
    if len(lines) < vertex.count:
        raise EpisodeFormatError(
            f"{path}: '{vertex.line}' declares {vertex.count} vertices but the ASCII body holds {len(lines)} "
            "vertex lines; the file is truncated or the vertex count is wrong"
        )
    names = [n for n, _ in vertex.props]
    rows = [ln.split() for ln in lines]
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise EpisodeFormatError(
                f"{path}: vertex {i} has {len(row)} values but the header declares {len(names)} properties {names}"
            )
    rec = np.empty(vertex.count, dtype=np.dtype([(n, t) for n, t in vertex.props]))
    for j, (name, t) in enumerate(vertex.props):
        col = _ascii_column([row[j] for row in rows], path, name)
        if np.dtype(t).kind in "iu":
            info = np.iinfo(t)
            bad = np.flatnonzero((col != np.round(col)) | (col < info.min) | (col > info.max))
            if len(bad):
                raise EpisodeFormatError(
                    f"{path}: vertex {bad[0]} property '{name}' is {col[bad[0]]:g}; expected an integer in "
                    f"[{info.min}, {info.max}] ({np.dtype(t).name})"
                )
        rec[name] = col
    return rec


def _ascii_column(tokens: list[str], path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(tokens, dtype=np.float64)
    except ValueError:
        for i, tok in enumerate(tokens):
            try:
                float(tok)
            except ValueError:
                raise EpisodeFormatError(f"{path}: vertex {i} property '{name}' is {tok!r}, not a number") from None
        raise
