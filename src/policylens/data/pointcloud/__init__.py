"""Point clouds with exact pixel uv: depth back-projection and PLY (binary / ASCII) I/O."""

from ._backproject import PointCloud, backproject
from ._ply import read_ply, read_ply_vertices, write_ply

__all__ = ["PointCloud", "backproject", "read_ply", "read_ply_vertices", "write_ply"]
