"""Malformed PLY files: each case writes a valid cloud with ``write_ply``, damages it, and checks that
``read_ply`` raises ``EpisodeFormatError`` naming the file and the header line, vertex or property."""

import numpy as np
import pytest

from policylens.data import EpisodeFormatError
from policylens.data.pointcloud import PointCloud, read_ply, write_ply

N = 5  # vertices; each binary vertex is 3 * 4 + 3 + 3 * 4 = 27 bytes


def _cloud() -> PointCloud:
    rng = np.random.default_rng(0)
    return PointCloud(rng.normal(size=(N, 3)), rng.integers(0, 256, (N, 3)), rng.integers(0, 64, (N, 2)), np.arange(N))


def _header_end(data: bytes) -> int:
    return data.index(b"end_header\n") + len(b"end_header\n")


def _sub(old: bytes, new: bytes):
    def damage(data: bytes) -> bytes:
        assert old in data, old
        return data.replace(old, new, 1)

    return damage


def _ascii_line(i: int, new: bytes):
    """Replace vertex line ``i`` of an ASCII body."""

    def damage(data: bytes) -> bytes:
        head, body = data[: _header_end(data)], data[_header_end(data) :].split(b"\n")
        body[i] = new
        return head + b"\n".join(body)

    return damage


CASES = {  # name: (binary, damage, text the message must hold besides the file name)
    "binary body truncated": (True, lambda d: d[:-10], "'element vertex 5' needs 135 bytes"),
    "header only": (True, lambda d: d[: _header_end(d)], "'element vertex 5' needs 135 bytes"),
    "vertex count too large": (True, _sub(b"element vertex 5", b"element vertex 500"), "'element vertex 500' needs"),
    "vertex count not a number": (True, _sub(b"element vertex 5", b"element vertex abc"), "'element vertex abc'"),
    "negative vertex count": (True, _sub(b"element vertex 5", b"element vertex -3"), "got count '-3'"),
    "element without count": (True, _sub(b"element vertex 5", b"element vertex"), "'element vertex'"),
    "non-ASCII header": (True, _sub(b"comment policylens", b"comment \xff\xfepolicylens"), "header line 3"),
    "format without value": (True, _sub(b"format binary_little_endian 1.0", b"format"), "header line 2 'format'"),
    "unknown format": (True, _sub(b"binary_little_endian", b"binary_middle_endian"), "binary_middle_endian"),
    "no format line": (True, _sub(b"format binary_little_endian 1.0\n", b""), "no 'format' line"),
    "property without name": (True, _sub(b"property float x", b"property float"), "'property float'"),
    "property of unknown type": (True, _sub(b"property float x", b"property quad x"), "type 'quad'"),
    "property twice": (True, _sub(b"property float y", b"property float x"), "property 'x' appears twice"),
    "property before element": (True, _sub(b"element vertex 5\n", b""), "before any 'element' line"),
    "unknown keyword": (True, _sub(b"comment", b"colour"), "unknown header keyword 'colour'"),
    "no end_header": (True, lambda d: d[: d.index(b"end_header")], "no 'end_header' line"),
    "no vertex element": (True, _sub(b"element vertex", b"element point"), "no 'element vertex N'"),
    "no xyz": (True, _sub(b"property float z", b"property float w"), "need properties x, y, z"),
    "ascii body truncated": (False, lambda d: d[: d.rindex(b"\n", 0, len(d) - 1)], "holds 4 vertex lines"),
    "ascii value not a number": (False, _ascii_line(2, b"1.0 2.0 abc 1 2 3 4 5 6"), "vertex 2 property 'z' is 'abc'"),
    "ascii row too short": (False, _ascii_line(1, b"1.0 2.0 3.0"), "vertex 1 has 3 values"),
    "ascii uchar out of range": (False, _ascii_line(0, b"1 2 3 300 0 0 1 1 1"), "vertex 0 property 'red' is 300;"),
    "ascii body not ASCII": (False, _ascii_line(0, b"1 2 3 \xe9 0 0 1 1 1"), "non-ASCII byte"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_ply_names_file_and_field(tmp_path, name):
    binary, damage, field = CASES[name]
    path = tmp_path / "cloud.ply"
    write_ply(path, _cloud(), binary=binary)
    read_ply(path)  # valid before the damage
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(EpisodeFormatError) as err:
        read_ply(path)
    assert str(path) in str(err.value) and field in str(err.value), str(err.value)


@pytest.mark.parametrize("binary", [True, False])
def test_elements_before_vertex_are_skipped(tmp_path, binary):
    """A scalar element declared before ``vertex`` is skipped, not read as vertices."""
    path = tmp_path / "pre.ply"
    cloud = _cloud()
    write_ply(path, cloud, binary=binary)
    data = path.read_bytes()
    head, body = data[: _header_end(data)], data[_header_end(data) :]
    head = head.replace(b"element vertex", b"element camera 2\nproperty uchar id\nproperty float f\nelement vertex")
    pre = np.array([(7, 1.5), (8, 2.5)], dtype=[("id", "u1"), ("f", "<f4")]).tobytes() if binary else b"7 1.5\n8 2.5\n"
    path.write_bytes(head + pre + body)
    back = read_ply(path)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.object_id, cloud.object_id)


def test_empty_cloud_reads(tmp_path):
    for binary in (True, False):
        path = tmp_path / f"empty_{binary}.ply"
        write_ply(path, PointCloud(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0)), binary=binary)
        assert len(read_ply(path)) == 0
