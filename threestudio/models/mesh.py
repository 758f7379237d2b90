"""Triangle meshes: vertex positions and faces plus lazily computed, cached attributes.

Derived attributes (normals, tangents, UVs, edges) are computed on first access from ``v_pos``
with differentiable torch ops, so gradients flow back to ``v_pos`` when it requires grad.
"""

import numpy as np
import torch
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError, did_you_mean
from threestudio.utils.ops import dot
from threestudio.utils.typing import Any, Dict, Float, Integer, Mapping, Optional, Tensor, Union


def connected_components(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Component label per face; faces sharing a vertex are connected (scipy's graph labelling)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    n_faces = faces.shape[0]
    # bipartite graph vertex <-> face: faces are linked through their vertices
    rows = np.repeat(np.arange(n_faces), 3) + n_vertices
    cols = faces.reshape(-1)
    n = n_vertices + n_faces
    graph = coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = cc(graph, directed=False)
    return labels[n_vertices:]


class Mesh:
    def __init__(
        self, v_pos: Float[Tensor, "Nv 3"], t_pos_idx: Integer[Tensor, "Nf 3"], **kwargs
    ) -> None:
        self.v_pos: Float[Tensor, "Nv 3"] = v_pos
        self.t_pos_idx: Integer[Tensor, "Nf 3"] = t_pos_idx
        self._v_nrm: Optional[Float[Tensor, "Nv 3"]] = None
        self._v_tng: Optional[Float[Tensor, "Nv 3"]] = None
        self._v_tex: Optional[Float[Tensor, "Nt 2"]] = None
        self._t_tex_idx: Optional[Integer[Tensor, "Nf 3"]] = None
        self._v_rgb: Optional[Float[Tensor, "Nv 3"]] = None
        self._edges: Optional[Integer[Tensor, "Ne 2"]] = None
        self.extras: Dict[str, Any] = {}
        for k, v in kwargs.items():
            self.add_extra(k, v)

    def add_extra(self, k: str, v: Any) -> None:
        self.extras[k] = v

    @property
    def requires_grad(self) -> bool:
        return self.v_pos.requires_grad

    # ------------------------------------------------------------------ topology clean-up
    def remove_outlier(self, outlier_n_faces_threshold: Union[int, float]) -> "Mesh":
        """Drop connected components with fewer faces than the threshold: an ``int`` is a face
        count, a ``float`` a fraction of all faces. Unreferenced vertices are dropped too; the
        kept vertices are gathered by indexing, so gradients still reach ``v_pos``."""
        n_faces = self.t_pos_idx.shape[0]
        if n_faces == 0:
            return self
        faces = self.t_pos_idx.detach().cpu().numpy()
        labels = connected_components(self.v_pos.shape[0], faces)
        counts = np.bincount(labels)
        if isinstance(outlier_n_faces_threshold, float):
            min_faces = int(outlier_n_faces_threshold * n_faces)
        else:
            min_faces = int(outlier_n_faces_threshold)
        keep_face = counts[labels] >= min_faces
        threestudio.debug(
            f"remove_outlier: {len(counts)} components, keeping {int((counts >= min_faces).sum())}"
        )
        faces = faces[keep_face]
        # compact vertices to the ones still referenced
        used, new_faces = np.unique(faces.reshape(-1), return_inverse=True)
        used_t = torch.from_numpy(used).to(self.v_pos.device)
        mesh = Mesh(
            v_pos=self.v_pos[used_t],
            t_pos_idx=torch.from_numpy(new_faces.reshape(-1, 3)).to(self.t_pos_idx),
            **self.extras,
        )
        if self._v_rgb is not None:
            mesh._v_rgb = self._v_rgb[used_t]
        return mesh

    # ------------------------------------------------------------------ lazy attributes
    @property
    def v_nrm(self) -> Float[Tensor, "Nv 3"]:
        if self._v_nrm is None:
            self._v_nrm = self._compute_vertex_normal()
        return self._v_nrm

    @property
    def v_tng(self) -> Float[Tensor, "Nv 3"]:
        if self._v_tng is None:
            self._v_tng = self._compute_vertex_tangent()
        return self._v_tng

    @property
    def v_tex(self) -> Float[Tensor, "Nt 2"]:
        if self._v_tex is None:
            self._v_tex, self._t_tex_idx = self._unwrap_uv()
        return self._v_tex

    @property
    def t_tex_idx(self) -> Integer[Tensor, "Nf 3"]:
        if self._t_tex_idx is None:
            self._v_tex, self._t_tex_idx = self._unwrap_uv()
        return self._t_tex_idx

    @property
    def v_rgb(self) -> Optional[Float[Tensor, "Nv 3"]]:
        return self._v_rgb

    @property
    def edges(self) -> Integer[Tensor, "Ne 2"]:
        if self._edges is None:
            self._edges = self._compute_edges()
        return self._edges

    def set_vertex_color(self, v_rgb: Float[Tensor, "Nv 3"]) -> None:
        assert v_rgb.shape[0] == self.v_pos.shape[0], "one colour per vertex"
        self._v_rgb = v_rgb

    def _face_vertices(self):
        f = self.t_pos_idx.long()
        return self.v_pos[f[:, 0]], self.v_pos[f[:, 1]], self.v_pos[f[:, 2]]

    def _compute_vertex_normal(self) -> Float[Tensor, "Nv 3"]:
        f = self.t_pos_idx.long()
        v0, v1, v2 = self._face_vertices()
        # the cross product's length is twice the face area: summing it weights by area
        face_normals = torch.linalg.cross(v1 - v0, v2 - v0)
        v_nrm = torch.zeros_like(self.v_pos)
        for k in range(3):
            v_nrm = v_nrm.index_add(0, f[:, k], face_normals)
        # isolated vertices get an arbitrary but valid normal
        fallback = torch.tensor([0.0, 0.0, 1.0], dtype=v_nrm.dtype, device=v_nrm.device)
        v_nrm = torch.where(dot(v_nrm, v_nrm) > 1e-20, v_nrm, fallback)
        return F.normalize(v_nrm, dim=1)

    def _compute_vertex_tangent(self) -> Float[Tensor, "Nv 3"]:
        f = self.t_pos_idx.long()
        ft = self.t_tex_idx.long()
        vn_idx = [f[:, k] for k in range(3)]
        pos = [self.v_pos[f[:, k]] for k in range(3)]
        tex = [self.v_tex[ft[:, k]] for k in range(3)]
        pe1, pe2 = pos[1] - pos[0], pos[2] - pos[0]
        uve1, uve2 = tex[1] - tex[0], tex[2] - tex[0]
        denom = uve1[:, 0:1] * uve2[:, 1:2] - uve1[:, 1:2] * uve2[:, 0:1]
        denom = torch.where(denom.abs() < 1e-12, torch.full_like(denom, 1e-12), denom)
        # tangent = direction of increasing u on the surface
        tang = (pe1 * uve2[:, 1:2] - pe2 * uve1[:, 1:2]) / denom
        tangents = torch.zeros_like(self.v_pos)
        counts = torch.zeros_like(self.v_pos[:, :1])
        for k in range(3):
            tangents = tangents.index_add(0, vn_idx[k], tang)
            counts = counts.index_add(0, vn_idx[k], torch.ones_like(tang[:, :1]))
        tangents = tangents / counts.clamp(min=1)
        tangents = F.normalize(tangents, dim=1)
        # Gram-Schmidt against the normal
        nrm = self.v_nrm
        tangents = F.normalize(tangents - dot(tangents, nrm) * nrm, dim=1)
        return tangents

    def _unwrap_uv(
        self,
        xatlas_chart_options: Optional[Mapping[str, Any]] = None,
        xatlas_pack_options: Optional[Mapping[str, Any]] = None,
    ):
        import xatlas

        threestudio.info("Using xatlas to perform UV unwrapping, may take a while ...")
        atlas = xatlas.Atlas()
        atlas.add_mesh(
            self.v_pos.detach().cpu().numpy().astype(np.float32),
            self.t_pos_idx.detach().cpu().numpy().astype(np.uint32),
        )
        co = xatlas.ChartOptions()
        po = xatlas.PackOptions()
        for name, options, target in (
            ("xatlas_chart_options", xatlas_chart_options, co),
            ("xatlas_pack_options", xatlas_pack_options, po),
        ):
            for k, v in (options or {}).items():
                if not hasattr(target, k):
                    known = [a for a in dir(target) if not a.startswith("_")]
                    raise ConfigError(
                        f"{name}: unknown option '{k}' of xatlas.{type(target).__name__}"
                        f"{did_you_mean(k, known)} (known: {', '.join(known)})"
                    )
                setattr(target, k, v)
        atlas.generate(co, po)
        _vmapping, indices, uvs = atlas.get_mesh(0)
        device = self.v_pos.device
        v_tex = torch.from_numpy(uvs.astype(np.float32)).to(device)
        t_tex_idx = torch.from_numpy(indices.astype(np.int64)).to(device)
        return v_tex, t_tex_idx

    def unwrap_uv(
        self,
        xatlas_chart_options: Optional[Mapping[str, Any]] = None,
        xatlas_pack_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """(Re)compute ``v_tex``/``t_tex_idx`` with xatlas; the option dicts set attributes of
        ``xatlas.ChartOptions`` / ``xatlas.PackOptions`` (e.g. ``{"max_iterations": 4}``)."""
        self._v_tex, self._t_tex_idx = self._unwrap_uv(xatlas_chart_options, xatlas_pack_options)
        self._v_tng = None

    def _compute_edges(self) -> Integer[Tensor, "Ne 2"]:
        f = self.t_pos_idx.long()
        edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
        edges = torch.sort(edges, dim=1).values
        # unique rows through one integer key per edge: torch.unique(dim=0) sorts rows on the
        # CPU about 100x slower (a second per refine step on a 64^3 tet grid's mesh), and the
        # key order is the same lexicographic order
        n_vertices = self.v_pos.shape[0]
        keys = torch.unique(edges[:, 0] * n_vertices + edges[:, 1])
        return torch.stack([keys // n_vertices, keys % n_vertices], dim=1)

    def face_adjacency(self) -> Integer[Tensor, "Np 2"]:
        """Pairs of faces sharing an edge (each manifold edge once)."""
        f = self.t_pos_idx.long()
        n_faces = f.shape[0]
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
        e = torch.sort(e, dim=1).values
        face_of = torch.arange(n_faces, device=f.device).repeat(3)
        key = e[:, 0] * (self.v_pos.shape[0] + 1) + e[:, 1]
        order = torch.argsort(key)
        key, face_of = key[order], face_of[order]
        same = key[1:] == key[:-1]
        return torch.stack([face_of[:-1][same], face_of[1:][same]], dim=1)

    # ------------------------------------------------------------------ regularisers
    def normal_consistency(self) -> Float[Tensor, ""]:
        """Mean over the mesh edges of (1 - cos) between the vertex normals at the edge's two
        ends, the established definition (the weights of published configs, e.g.
        lambda_normal_consistency 10000 in magic3d-refine-sd, are tuned to it)."""
        if self.t_pos_idx.shape[0] == 0:
            return self.v_pos.sum() * 0.0
        edge_nrm = self.v_nrm[self.edges]  # [Ne, 2, 3]
        cos = F.cosine_similarity(edge_nrm[:, 0], edge_nrm[:, 1], dim=-1)
        return (1.0 - cos).mean()

    def _laplacian_uniform(self) -> Tensor:
        """Sparse uniform Laplacian L = D - A over the mesh edges."""
        n = self.v_pos.shape[0]
        e = self.edges
        ii = torch.cat([e[:, 0], e[:, 1]])
        jj = torch.cat([e[:, 1], e[:, 0]])
        adj_values = torch.ones(ii.shape[0], device=self.v_pos.device, dtype=self.v_pos.dtype)
        deg = torch.zeros(n, device=self.v_pos.device, dtype=self.v_pos.dtype).index_add(
            0, ii, adj_values
        )
        diag = torch.arange(n, device=self.v_pos.device)
        idx = torch.cat([torch.stack([ii, jj]), torch.stack([diag, diag])], dim=1)
        values = torch.cat([-adj_values, deg])
        return torch.sparse_coo_tensor(idx, values, (n, n)).coalesce()

    def laplacian(self) -> Float[Tensor, ""]:
        """Uniform Laplacian smoothing loss: mean over vertices of the norm of (L @ v_pos)_i,
        i.e. deg_i times the offset of vertex i from the mean of its neighbours (as
        established)."""
        if self.t_pos_idx.shape[0] == 0:
            return self.v_pos.sum() * 0.0
        with torch.no_grad():
            lap = self._laplacian_uniform()
        return torch.sparse.mm(lap, self.v_pos).norm(dim=1).mean()
