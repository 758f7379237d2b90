"""Isosurface extraction from a level field sampled on a grid (negative = inside).

``MarchingCubeCPUHelper`` runs PyMCubes on a regular grid: fast, NOT differentiable.
``MarchingTetrahedraHelper`` runs marching tetrahedra on a tet grid in torch: differentiable in the
level values and in the grid deformation (vertex positions interpolate linearly along crossing
edges). Both return a ``Mesh`` in ``points_range`` coordinates on the level tensor's device, with
faces oriented so that normals point out of the negative region.
"""

import itertools

import numpy as np
import torch
import torch.nn as nn

from threestudio.models.mesh import Mesh
from threestudio.utils.tets import load_tet_grid
from threestudio.utils.typing import Float, Optional, Tensor, Tuple

# local edges of a tetrahedron as vertex pairs
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _build_triangle_table() -> Tuple[np.ndarray, np.ndarray]:
    """For each of the 16 inside/outside cases (bit k set = vertex k inside) the triangles as
    triples of local edge ids (-1 padded) and their count. Built from the case analysis on a
    positively oriented reference tetrahedron, orienting each triangle away from the inside."""
    ref = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    edge_id = {e: i for i, e in enumerate(TET_EDGES)}

    def eid(a, b):
        return edge_id[(min(a, b), max(a, b))]

    table = -np.ones((16, 6), dtype=np.int64)
    counts = np.zeros(16, dtype=np.int64)
    for case in range(16):
        inside = [k for k in range(4) if case >> k & 1]
        outside = [k for k in range(4) if not case >> k & 1]
        if len(inside) in (0, 4):
            continue
        if len(inside) in (1, 3):
            lone = inside[0] if len(inside) == 1 else outside[0]
            others = [k for k in range(4) if k != lone]
            tris = [[eid(lone, o) for o in others]]
        else:
            a, b = inside
            c, d = outside
            # the quad ac-ad-bd-bc, split along ac-bd
            tris = [[eid(a, c), eid(a, d), eid(b, d)], [eid(a, c), eid(b, d), eid(b, c)]]
        c_in = ref[inside].mean(0)
        c_out = ref[outside].mean(0)
        oriented = []
        for tri in tris:
            p = np.array([ref[list(TET_EDGES[e])].mean(0) for e in tri])
            n = np.cross(p[1] - p[0], p[2] - p[0])
            if np.dot(n, c_out - c_in) < 0:
                tri = [tri[0], tri[2], tri[1]]
            oriented.extend(tri)
        table[case, : len(oriented)] = oriented
        counts[case] = len(tris)
    return table, counts


TRIANGLE_TABLE, NUM_TRIANGLES = _build_triangle_table()


class IsosurfaceHelper(nn.Module):
    points_range: Tuple[float, float] = (0, 1)

    @property
    def grid_vertices(self) -> Float[Tensor, "N 3"]:
        raise NotImplementedError


class MarchingCubeCPUHelper(IsosurfaceHelper):
    """Marching cubes on a ``resolution``^3 grid of points spanning ``points_range``. Runs on the
    CPU with PyMCubes and is not differentiable (the mesh carries no gradient to the level)."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self._grid_vertices: Optional[Float[Tensor, "N3 3"]] = None
        self._dummy: Tensor
        self.register_buffer("_dummy", torch.zeros(0, dtype=torch.float32), persistent=False)

    @property
    def grid_vertices(self) -> Float[Tensor, "N3 3"]:
        if self._grid_vertices is None:
            r = self.resolution
            axis = torch.linspace(*self.points_range, r)
            x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
            verts = torch.stack([x, y, z], dim=-1).reshape(-1, 3)
            self._grid_vertices = verts
        return self._grid_vertices.to(self._dummy.device)

    def forward(
        self, level: Float[Tensor, "N3 1"], deformation: Optional[Float[Tensor, "N3 3"]] = None
    ) -> Mesh:
        import mcubes

        r = self.resolution
        lvl = level.detach().reshape(r, r, r).cpu().numpy().astype(np.float64)
        # PyMCubes orients faces out of the region above the iso value: negate our level
        v_pos, t_pos_idx = mcubes.marching_cubes(-lvl, 0.0)
        lo, hi = self.points_range
        v_pos = v_pos / (r - 1) * (hi - lo) + lo
        v_pos = torch.from_numpy(v_pos.astype(np.float32)).to(level.device)
        t_pos_idx = torch.from_numpy(t_pos_idx.astype(np.int64)).to(level.device)
        return Mesh(v_pos=v_pos, t_pos_idx=t_pos_idx)


class MarchingTetrahedraHelper(IsosurfaceHelper):
    """Differentiable marching tetrahedra on a tet grid of ``resolution`` (see
    ``threestudio.utils.tets``), optionally deformed by a per-vertex offset."""

    def __init__(self, resolution: int, tets_path: Optional[str] = None) -> None:
        super().__init__()
        self.resolution = resolution
        self.tets_path = tets_path
        vertices, indices = load_tet_grid(resolution, tets_path)
        self._grid_vertices: Float[Tensor, "Nv 3"]
        self.register_buffer("_grid_vertices", torch.from_numpy(vertices).float(), persistent=False)
        self.indices: Tensor
        self.register_buffer("indices", torch.from_numpy(indices).long(), persistent=False)
        self.triangle_table: Tensor
        self.register_buffer("triangle_table", torch.from_numpy(TRIANGLE_TABLE), persistent=False)
        self.num_triangles_table: Tensor
        self.register_buffer(
            "num_triangles_table", torch.from_numpy(NUM_TRIANGLES), persistent=False
        )
        self.base_tet_edges: Tensor
        self.register_buffer(
            "base_tet_edges", torch.tensor(list(itertools.chain(*TET_EDGES))), persistent=False
        )

    @property
    def grid_vertices(self) -> Float[Tensor, "Nv 3"]:
        return self._grid_vertices

    def normalize_grid_deformation(
        self, grid_vertex_offsets: Float[Tensor, "Nv 3"]
    ) -> Float[Tensor, "Nv 3"]:
        """Raw offsets -> at most one grid cell in each axis: span / resolution * tanh(offset)."""
        span = self.points_range[1] - self.points_range[0]
        return span / self.resolution * torch.tanh(grid_vertex_offsets)

    def forward(
        self, level: Float[Tensor, "Nv 1"], deformation: Optional[Float[Tensor, "Nv 3"]] = None
    ) -> Mesh:
        grid = self.grid_vertices
        if deformation is not None:
            grid = grid + self.normalize_grid_deformation(deformation)
        sdf = level.reshape(-1)
        v_pos, t_pos_idx = self._marching_tets(grid, sdf, self.indices)
        return Mesh(v_pos=v_pos, t_pos_idx=t_pos_idx, grid_vertices=grid, tet_sdf=sdf)

    def _marching_tets(
        self, pos: Float[Tensor, "Nv 3"], sdf: Float[Tensor, "Nv"], tets: Tensor
    ) -> Tuple[Float[Tensor, "Nout 3"], Tensor]:
        device = pos.device
        n_verts = pos.shape[0]
        with torch.no_grad():
            occ = sdf < 0
            occ_tet = occ[tets]
            n_inside = occ_tet.sum(-1)
            valid = (n_inside > 0) & (n_inside < 4)
            valid_tets = tets[valid]
            occ_tet = occ_tet[valid]
            edges = valid_tets[:, self.base_tet_edges].reshape(-1, 2)
            edges = torch.sort(edges, dim=1).values
            keys = edges[:, 0] * n_verts + edges[:, 1]
            unique_keys, edge_of_slot = torch.unique(keys, return_inverse=True)
            unique_edges = torch.stack([unique_keys // n_verts, unique_keys % n_verts], dim=1)
            crossing = occ[unique_edges].sum(-1) == 1
            new_index = torch.full_like(unique_keys, -1)
            new_index[crossing] = torch.arange(int(crossing.sum()), device=device)
            edge_vertex = new_index[edge_of_slot].reshape(-1, 6)
            cross_edges = unique_edges[crossing]

        # the zero crossing along each edge, differentiable in sdf and pos
        s = sdf[cross_edges]  # [E, 2]
        p = pos[cross_edges]  # [E, 2, 3]
        w = s[:, 1:2] / (s[:, 1:2] - s[:, 0:1])  # weight of the first end point
        v_pos = p[:, 0] * w + p[:, 1] * (1 - w)

        with torch.no_grad():
            weights = torch.tensor([1, 2, 4, 8], device=device)
            case = (occ_tet.long() * weights).sum(-1)
            n_tri = self.num_triangles_table[case]
            table = self.triangle_table[case]  # [T, 6]
            one = n_tri == 1
            two = n_tri == 2
            faces_one = torch.gather(edge_vertex[one], 1, table[one][:, :3])
            faces_two = torch.gather(edge_vertex[two], 1, table[two][:, :6]).reshape(-1, 3)
            t_pos_idx = torch.cat([faces_one, faces_two], dim=0)
        return v_pos, t_pos_idx
