"""Inside tests and distances for a closed triangle mesh at many points, fast enough to run at
every training step (Sketch-Shape's guide mesh).

Brute force over every triangle (``implicit_sdf.mesh_sdf``) costs points x faces; here:

- inside: ray parity. A ray from the point crosses a closed surface an odd number of times when
  the point is inside. The rays run along a fixed oblique direction (the mesh is turned so that
  it becomes +z), so that the symmetry planes of meshes and of test points do not line rays up
  with edges; triangles are binned by their bounding boxes across the rays, so a point only
  tests the few triangles over its cell. A ray passing exactly through an edge or a vertex (a set
  of measure zero) may misjudge its point.
- distance: exact point-triangle distances on the points' device, measured against the triangles
  whose bounding spheres come nearest (a cheap points x faces bound), and against every triangle
  for the few points where those cannot be sure to hold the nearest one.
"""

import numpy as np
import torch
import torch.nn.functional as F

from threestudio.utils.typing import Bool, Float, Int, Tensor


def _point_segment_distance2(p, a, b):
    ab = b - a
    t = ((p - a) * ab).sum(-1, keepdim=True) / (ab * ab).sum(-1, keepdim=True).clamp_min(1e-20)
    closest = a + t.clamp(0.0, 1.0) * ab
    return ((p - closest) ** 2).sum(-1)


def point_triangle_distance2(
    p: Float[Tensor, "*P 3"],
    a: Float[Tensor, "*F 3"],
    b: Float[Tensor, "*F 3"],
    c: Float[Tensor, "*F 3"],
) -> Float[Tensor, "..."]:
    """Squared distance from points to triangles (a, b, c), broadcast: points [n, 1, 3] against
    triangles [F, 3] give [n, F]; against per-point candidates [n, k, 3], [n, k]."""
    n = torch.cross(b - a, c - a, dim=-1)
    n_unit = F.normalize(n, dim=-1)
    # distance to the plane when the projection falls inside the triangle
    plane_dist = ((p - a) * n_unit).sum(-1)
    proj = p - plane_dist[..., None] * n_unit
    inside = (
        ((torch.cross((b - a).expand_as(proj), proj - a, dim=-1) * n).sum(-1) >= 0)
        & ((torch.cross((c - b).expand_as(proj), proj - b, dim=-1) * n).sum(-1) >= 0)
        & ((torch.cross((a - c).expand_as(proj), proj - c, dim=-1) * n).sum(-1) >= 0)
    )
    edge_d2 = torch.minimum(
        torch.minimum(_point_segment_distance2(p, a, b), _point_segment_distance2(p, b, c)),
        _point_segment_distance2(p, c, a),
    )
    return torch.where(inside, plane_dist**2, edge_d2)


def _oblique_rotation() -> np.ndarray:
    """A fixed rotation taking +z to an oblique direction (angles unrelated to mesh symmetries)."""
    ax, ay, az = 0.5235987755982988 + 0.1234, 0.7853981633974483 + 0.0567, 0.2961
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class MeshQueries:
    """``inside(points)`` and ``distance(points)`` for one closed triangle mesh."""

    def __init__(
        self,
        vertices: Float[Tensor, "Nv 3"],
        faces: Int[Tensor, "Nf 3"],
        bins: int = 32,
    ) -> None:
        v = vertices.detach().cpu().double().numpy()
        f = faces.detach().cpu().long().numpy()
        self.triangles = torch.from_numpy(v[f]).float()  # for distances, as given
        # inside tests run in a turned frame whose +z is the rays' direction
        self.rotation = _oblique_rotation()
        v = v @ self.rotation.T
        tri = v[f]  # [F, 3, 3]
        self.lo, self.hi = v.min(0), v.max(0)
        self.bins = bins
        self.cell = np.maximum((self.hi[:2] - self.lo[:2]) / bins, 1e-12)
        # each triangle in every xy cell its bounding box touches: a padded table cell -> faces
        tmin = np.floor((tri[:, :, :2].min(1) - self.lo[:2]) / self.cell).astype(int)
        tmax = np.floor((tri[:, :, :2].max(1) - self.lo[:2]) / self.cell).astype(int)
        tmin, tmax = np.clip(tmin, 0, bins - 1), np.clip(tmax, 0, bins - 1)
        cells, owners = [], []
        for fi, (a, b) in enumerate(zip(tmin, tmax)):
            gx, gy = np.meshgrid(np.arange(a[0], b[0] + 1), np.arange(a[1], b[1] + 1))
            cells.append((gx * bins + gy).reshape(-1))
            owners.append(np.full(gx.size, fi))
        cells, owners = np.concatenate(cells), np.concatenate(owners)
        order = np.argsort(cells, kind="stable")
        cells, owners = cells[order], owners[order]
        counts = np.bincount(cells, minlength=bins * bins)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(cells)) - starts[cells]
        table = np.full((bins * bins, max(1, counts.max())), -1, dtype=np.int64)
        table[cells, rank] = owners
        self.table = torch.from_numpy(table)
        self.turned_triangles = torch.from_numpy(tri).float()

    # ---------- inside ----------

    @torch.no_grad()
    def inside(self, points: Float[Tensor, "N 3"], chunk_pairs: int = 2**21) -> Bool[Tensor, "N"]:
        device = points.device
        rotation = torch.as_tensor(self.rotation, dtype=torch.float32, device=device)
        p = points.detach().float() @ rotation.T
        lo = torch.as_tensor(self.lo, dtype=p.dtype, device=device)
        hi = torch.as_tensor(self.hi, dtype=p.dtype, device=device)
        result = torch.zeros(p.shape[0], dtype=torch.bool, device=device)
        candidates = torch.nonzero(((p >= lo) & (p <= hi)).all(-1)).squeeze(-1)
        if candidates.numel() == 0:
            return result
        table = self.table.to(device)
        triangles = self.turned_triangles.to(device)
        cell = torch.as_tensor(self.cell, dtype=p.dtype, device=device)
        chunk = max(1, chunk_pairs // table.shape[1])
        for start in range(0, candidates.numel(), chunk):
            idx = candidates[start : start + chunk]
            q = p[idx]
            ij = ((q[:, :2] - lo[:2]) / cell).long().clamp(0, self.bins - 1)
            faces = table[ij[:, 0] * self.bins + ij[:, 1]]  # [n, K]
            valid = faces >= 0
            tri = triangles[faces.clamp_min(0)]  # [n, K, 3, 3]
            a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
            x, y = q[:, None, 0], q[:, None, 1]

            def cross2(o, d, px, py):  # z of (d - o) x (p - o)
                return (d[..., 0] - o[..., 0]) * (py - o[..., 1]) - (d[..., 1] - o[..., 1]) * (
                    px - o[..., 0]
                )

            w_c, w_a, w_b = cross2(a, b, x, y), cross2(b, c, x, y), cross2(c, a, x, y)
            area = w_a + w_b + w_c  # twice the projected signed area
            over = ((w_a > 0) & (w_b > 0) & (w_c > 0)) | ((w_a < 0) & (w_b < 0) & (w_c < 0))
            z_hit = (w_a * a[..., 2] + w_b * b[..., 2] + w_c * c[..., 2]) / torch.where(
                area == 0, torch.ones_like(area), area
            )
            crossings = (valid & over & (area != 0) & (z_hit > q[:, None, 2])).sum(-1)
            result[idx] = crossings % 2 == 1
        return result

    # ---------- distance ----------

    @torch.no_grad()
    def distance(
        self, points: Float[Tensor, "N 3"], candidates: int = 64, chunk_pairs: int = 2**22
    ) -> Float[Tensor, "N"]:
        """Exact distances. Each triangle's bounding sphere gives a lower bound on the distance;
        the ``candidates`` triangles with the lowest bounds are measured exactly, and a point
        whose best exact distance exceeds the next bound (rare: e.g. the centre of a sphere) is
        measured against every triangle."""
        device = points.device
        triangles = self.triangles.to(device)
        a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
        centre = triangles.mean(1)
        radius = (triangles - centre[:, None]).norm(dim=-1).max(-1).values
        p = points.detach().float()
        k = min(candidates, triangles.shape[0])
        chunk = max(1, chunk_pairs // triangles.shape[0])
        out = []
        for i in range(0, p.shape[0], chunk):
            q = p[i : i + chunk]
            bound = (torch.cdist(q, centre) - radius).clamp_min(0.0)  # [n, F]
            low, idx = bound.topk(min(k + 1, bound.shape[1]), dim=-1, largest=False)
            near = idx[:, :k]
            d2 = point_triangle_distance2(q[:, None, :], a[near], b[near], c[near]).min(-1).values
            dist = d2.sqrt()
            if k < triangles.shape[0]:
                unsure = dist > low[:, k]
                if unsure.any():
                    d2_all = point_triangle_distance2(q[unsure][:, None, :], a, b, c)
                    dist[unsure] = d2_all.min(-1).values.sqrt()
            out.append(dist)
        return torch.cat(out).to(points.dtype) if out else p.new_zeros(0)
