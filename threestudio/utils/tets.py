"""Tetrahedral grids for marching tetrahedra.

A grid of resolution N covers the unit cube [0, 1]^3 with (N+1)^3 vertices; every grid cube is split
into 6 tetrahedra along its main diagonal (the Kuhn/Freudenthal split: one tetrahedron per ordering
of the three axes). The split is the same in every cube, so neighbouring cubes split their shared
faces along the same diagonal and the tetrahedra form a conforming mesh. Every tetrahedron is stored
with positive orientation, which the marching-tetrahedra triangle table relies on.
"""

import itertools
import os
from pathlib import Path

import numpy as np

from threestudio.utils.errors import UserError
from threestudio.utils.typing import Optional, Tuple


def tets_cache_dir() -> Path:
    root = os.environ.get("THREESTUDIO_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "threestudio"
    return base / "tets"


def generate_tet_grid(resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """Vertices [(N+1)^3, 3] float32 in [0, 1]^3 and tetrahedra [6 N^3, 4] int32."""
    n = int(resolution)
    if n < 1:
        raise UserError(f"tet grid resolution must be >= 1, got {resolution}")
    axis = np.arange(n + 1, dtype=np.float32) / n
    gx, gy, gz = np.meshgrid(axis, axis, axis, indexing="ij")
    vertices = np.stack([gx, gy, gz], axis=-1).reshape(-1, 3)

    def vid(i, j, k):
        return (i * (n + 1) + j) * (n + 1) + k

    ci, cj, ck = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    ci, cj, ck = ci.reshape(-1), cj.reshape(-1), ck.reshape(-1)
    tets = []
    for perm in itertools.permutations(range(3)):
        # walk from corner (0,0,0) to (1,1,1) adding one axis at a time in the order ``perm``
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis_id in perm:
            corner[axis_id] = 1
            path.append(tuple(corner))
        tet = np.stack([vid(ci + a, cj + b, ck + c) for a, b, c in path], axis=-1)
        # orientation of this permutation's tetrahedron (same for every cube)
        p = np.array(path, dtype=np.float64)
        vol = np.linalg.det(np.stack([p[1] - p[0], p[2] - p[0], p[3] - p[0]]))
        if vol < 0:
            tet = tet[:, [0, 2, 1, 3]]
        tets.append(tet)
    tets = np.concatenate(tets, axis=0).astype(np.int32)
    return vertices, tets


def load_tet_grid(
    resolution: int, tets_path: Optional[str] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """The grid for ``resolution``: from ``tets_path`` if given, else ``load/tets/<N>_tets.npz`` if
    present, else from the cache (generated and saved there on first use). Files hold ``vertices``
    and ``indices``; a file whose vertices lie in [-0.5, 0.5]^3 (the original threestudio files)
    is shifted to [0, 1]^3."""
    candidates = [Path(tets_path)] if tets_path else [Path("load/tets") / f"{resolution}_tets.npz"]
    for path in candidates:
        if path.exists():
            data = np.load(path)
            vertices = data["vertices"].astype(np.float32)
            if vertices.min() < -0.25:
                vertices = vertices + 0.5
            return vertices, data["indices"].astype(np.int64)
    if tets_path:
        raise UserError(f"tets_path: file '{tets_path}' not found (leave it unset to generate one)")
    cache = tets_cache_dir() / f"{resolution}_tets.npz"
    if cache.exists():
        data = np.load(cache)
        return data["vertices"], data["indices"].astype(np.int64)
    vertices, tets = generate_tet_grid(resolution)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, vertices=vertices, indices=tets)
        os.replace(tmp, cache)
    except OSError:  # a read-only home is not an error: the grid is cheap to rebuild
        pass
    return vertices, tets.astype(np.int64)
