"""Coloured point clouds as binary PLY (x, y, z float32; red, green, blue uchar).

That is the layout nerfstudio's ``sparse_pc.ply`` uses (splatfacto's initial points, read with open3d),
so one writer serves nerfstudio and every viewer (MeshLab, CloudCompare, Blender).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Tuple

import numpy as np

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray) -> Path:
    """(M, 3) float points and (M, 3) uint8 colours -> binary little-endian PLY, written atomically."""
    points = np.asarray(points)
    colours = np.asarray(colours)
    if points.ndim != 2 or points.shape[1] != 3 or colours.shape != points.shape:
        raise ValueError(f"points and colours must both be (M, 3), got {points.shape} and {colours.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{path}: refusing to write non-finite points")
    vertices = np.empty(len(points), _VERTEX)
    for k, axis in enumerate("xyz"):
        vertices[axis] = points[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = colours[:, k]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by reliev3r-ns\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertices.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_ply(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Read a PLY written by :func:`write_ply` (or any binary little-endian x/y/z + uchar rgb cloud)."""
    from plyfile import PlyData  # nerfstudio's own dependency; handles every PLY variant

    try:
        vertex = PlyData.read(str(path))["vertex"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: cannot read as a point cloud PLY ({error})") from None
    points = np.stack([vertex[a] for a in "xyz"], axis=1).astype(np.float32)
    names = vertex.data.dtype.names
    if all(c in names for c in ("red", "green", "blue")):
        colours = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
    else:
        colours = np.full_like(points, 255, dtype=np.uint8)
    return points, colours
