"""Differentiable rasterisation behind one interface, with two backends.

``NVDiffRasterizerContext`` uses nvdiffrast when it is importable AND the device is CUDA; otherwise a
pure-PyTorch rasteriser with the same conventions (``make_rasterizer`` is the one place that
picks, once per context):

* ``rast[..., :4] = (u, v, z/w, triangle_id + 1)``, all zero where no triangle covers the pixel;
  an attribute interpolates as ``u * a0 + v * a1 + (1 - u - v) * a2`` (perspective-correct);
* pixel ``(row i, column j)`` samples clip-space ``x = (j + 0.5) / W * 2 - 1`` and
  ``y = (i + 0.5) / H * 2 - 1``: row 0 is the bottom of the image (y = -1), as in OpenGL;
* the nearest ``z/w`` wins; fragments outside ``-1 <= z/w <= 1`` are clipped. Triangles with a
  vertex at ``w <= 0`` (behind the camera) are dropped whole instead of being clipped.

Gradients of the torch backend: ``rast``'s (u, v, z/w) are recomputed with autograd from ``pos`` for
covered pixels, so ``interpolate`` passes gradients to attributes and vertex positions;
``antialias`` blends colours across silhouette edges by where the edge crosses the segment between
neighbouring pixel centres (an analogue of nvdiffrast's analytic antialiasing), which gives
gradients to silhouette vertices so that a mask loss moves the mesh.
"""

import functools
import weakref

import torch

from threestudio.kernels.backend import report_fallback
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import as_resolution
from threestudio.utils.typing import Float, Integer, List, Optional, Tensor, Tuple, Union

# rasterise in chunks of at most this many candidate (triangle, pixel) pairs
CANDIDATE_BUDGET = 1 << 22
# antialias: at most this many triangles crossed looking for a silhouette edge per pixel pair
MAX_SILHOUETTE_WALK = 8


@functools.cache
def _nvdiffrast_available() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# pure PyTorch backend
# ---------------------------------------------------------------------------------------------
def _to_pixels(pos: Float[Tensor, "Nv 4"], H: int, W: int):
    """Clip-space -> pixel coordinates (pixel centres at integer + 0.5) and z/w."""
    w = pos[:, 3]
    x = (pos[:, 0] / w * 0.5 + 0.5) * W
    y = (pos[:, 1] / w * 0.5 + 0.5) * H
    z = pos[:, 2] / w
    return x, y, z, w


def _edge(ax, ay, bx, by, px, py):
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _screen_barycentrics(tx, ty, px, py):
    """Screen-space barycentrics of points (px, py) in triangles with corners (tx, ty) [..., 3]."""
    area = _edge(tx[..., 0], ty[..., 0], tx[..., 1], ty[..., 1], tx[..., 2], ty[..., 2])
    b0 = _edge(tx[..., 1], ty[..., 1], tx[..., 2], ty[..., 2], px, py) / area
    b1 = _edge(tx[..., 2], ty[..., 2], tx[..., 0], ty[..., 0], px, py) / area
    b2 = 1.0 - b0 - b1
    return b0, b1, b2


def _visible_triangles(
    pos: Float[Tensor, "Nv 4"], tri: Tensor, H: int, W: int
) -> Tuple[Tensor, Tensor]:
    """Per-pixel winning triangle id (-1 where empty) and its z/w for one image (no grad)."""
    device = pos.device
    x, y, z, w = _to_pixels(pos.detach().float(), H, W)
    tx, ty, tz, tw = x[tri], y[tri], z[tri], w[tri]  # [F, 3]
    area = _edge(tx[:, 0], ty[:, 0], tx[:, 1], ty[:, 1], tx[:, 2], ty[:, 2])
    # pixel index range whose centres the triangle's bounding box can contain
    x0 = torch.ceil(tx.amin(1) - 0.5).clamp(min=0)
    x1 = torch.floor(tx.amax(1) - 0.5).clamp(max=W - 1)
    y0 = torch.ceil(ty.amin(1) - 0.5).clamp(min=0)
    y1 = torch.floor(ty.amax(1) - 0.5).clamp(max=H - 1)
    keep = (
        (tw > 0).all(1)
        & (area.abs() > 1e-12)
        & (x1 >= x0)
        & (y1 >= y0)
        & (tz.amin(1) <= 1)
        & (tz.amax(1) >= -1)
    )
    tri_ids = torch.nonzero(keep).squeeze(1)
    zbuf = torch.full((H * W,), float("inf"), device=device)
    idbuf = torch.full((H * W,), -1, dtype=torch.long, device=device)
    if tri_ids.numel() == 0:
        return idbuf, zbuf
    x0, y0 = x0[tri_ids].long(), y0[tri_ids].long()
    bw = x1[tri_ids].long() - x0 + 1
    bh = y1[tri_ids].long() - y0 + 1
    n_cand = bw * bh
    # chunks of whole triangles with at most CANDIDATE_BUDGET candidates (a bigger one goes alone)
    csum = torch.cumsum(n_cand, 0)
    chunk_of = torch.div(csum - 1, CANDIDATE_BUDGET, rounding_mode="floor")
    bounds = torch.searchsorted(chunk_of, torch.unique(chunk_of), right=True).tolist()
    start = 0
    for end in bounds:
        sl = slice(start, end)
        start = end
        counts = n_cand[sl]
        total = int(counts.sum())
        local_tri = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
        offsets = torch.cumsum(counts, 0) - counts
        local = torch.arange(total, device=device) - offsets[local_tri]
        cbw = bw[sl][local_tri]
        px = x0[sl][local_tri] + local % cbw
        py = y0[sl][local_tri] + torch.div(local, cbw, rounding_mode="floor")
        fid = tri_ids[sl][local_tri]
        b0, b1, b2 = _screen_barycentrics(tx[fid], ty[fid], px + 0.5, py + 0.5)
        zc = b0 * tz[fid, 0] + b1 * tz[fid, 1] + b2 * tz[fid, 2]
        inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (zc >= -1) & (zc <= 1)
        pix = (py * W + px)[inside]
        zc, fid = zc[inside], fid[inside]
        chunk_z = torch.full((H * W,), float("inf"), device=device)
        chunk_z.scatter_reduce_(0, pix, zc, reduce="amin")
        wins = (zc == chunk_z[pix]) & (zc < zbuf[pix])
        chunk_id = torch.full((H * W,), -1, dtype=torch.long, device=device)
        chunk_id.scatter_reduce_(0, pix[wins], fid[wins], reduce="amax")
        better = chunk_z < zbuf
        zbuf = torch.where(better, chunk_z, zbuf)
        idbuf = torch.where(better, chunk_id, idbuf)
    return idbuf, zbuf


def _gather_corners(pos, tri, fid, H, W):
    x, y, z, w = _to_pixels(pos, H, W)
    corners = tri[fid]
    return x[corners], y[corners], z[corners], w[corners]


def _perspective_barycentrics(corners, px, py):
    """Differentiable (u, v, z/w) of pixel centres (px, py) in triangles with gathered corners."""
    tx, ty, tz, tw = corners
    b0, b1, b2 = _screen_barycentrics(tx, ty, px, py)
    zc = b0 * tz[:, 0] + b1 * tz[:, 1] + b2 * tz[:, 2]
    # perspective correction: screen barycentrics / w, renormalised
    p0, p1, p2 = b0 / tw[:, 0], b1 / tw[:, 1], b2 / tw[:, 2]
    s = p0 + p1 + p2
    return p0 / s, p1 / s, zc


def torch_rasterize(
    pos: Float[Tensor, "B Nv 4"], tri: Integer[Tensor, "Nf 3"], resolution: Tuple[int, int]
) -> Tuple[Float[Tensor, "B H W 4"], Float[Tensor, "B H W 4"]]:
    H, W = as_resolution(*resolution)
    tri = tri.long()
    rasts, dbs = [], []
    for b in range(pos.shape[0]):
        idbuf, _ = _visible_triangles(pos[b], tri, H, W)
        covered = torch.nonzero(idbuf >= 0).squeeze(1)
        fid = idbuf[covered]
        px = (covered % W).to(pos.dtype) + 0.5
        py = torch.div(covered, W, rounding_mode="floor").to(pos.dtype) + 0.5
        corners = _gather_corners(pos[b], tri, fid, H, W)
        u, v, zc = _perspective_barycentrics(corners, px, py)
        values = torch.stack([u, v, zc, (fid + 1).to(pos.dtype)], dim=-1)
        rast = torch.zeros(H * W, 4, dtype=pos.dtype, device=pos.device)
        rast = rast.index_put((covered,), values)
        # image-space derivatives of (u, v) by central differences of the exact rational formula
        with torch.no_grad():
            cd = tuple(c.detach() for c in corners)
            ux1, vx1, _ = _perspective_barycentrics(cd, px + 0.5, py)
            ux0, vx0, _ = _perspective_barycentrics(cd, px - 0.5, py)
            uy1, vy1, _ = _perspective_barycentrics(cd, px, py + 0.5)
            uy0, vy0, _ = _perspective_barycentrics(cd, px, py - 0.5)
            db_values = torch.stack([ux1 - ux0, uy1 - uy0, vx1 - vx0, vy1 - vy0], dim=-1)
            db = torch.zeros(H * W, 4, dtype=pos.dtype, device=pos.device)
            db[covered] = db_values
        rasts.append(rast.reshape(H, W, 4))
        dbs.append(db.reshape(H, W, 4))
    return torch.stack(rasts), torch.stack(dbs)


def _gather_attr(attr: Tensor, b: int) -> Tensor:
    if attr.dim() == 2:
        return attr
    return attr[b] if attr.shape[0] > 1 else attr[0]


def torch_interpolate(
    attr: Float[Tensor, "#B Nv C"],  # a batch of 1 is shared by every image
    rast: Float[Tensor, "B H W 4"],
    tri: Integer[Tensor, "Nf 3"],
    rast_db: Optional[Float[Tensor, "B H W 4"]] = None,
    diff_attrs: Optional[Union[str, List[int]]] = None,
) -> Tuple[Float[Tensor, "B H W C"], Tensor]:
    tri = tri.long()
    B, H, W, _ = rast.shape
    outs, das = [], []
    for b in range(B):
        a = _gather_attr(attr, b)
        r = rast[b].reshape(-1, 4)
        fid = r[:, 3].detach().long() - 1
        covered = torch.nonzero(fid >= 0).squeeze(1)
        corners = tri[fid[covered]]
        u, v = r[covered, 0:1], r[covered, 1:2]
        a0, a1, a2 = a[corners[:, 0]], a[corners[:, 1]], a[corners[:, 2]]
        values = u * a0 + v * a1 + (1 - u - v) * a2
        out = torch.zeros(H * W, a.shape[-1], dtype=values.dtype, device=rast.device)
        outs.append(out.index_put((covered,), values).reshape(H, W, -1))
        if diff_attrs is not None and rast_db is not None:
            idx = list(range(a.shape[-1])) if diff_attrs == "all" else list(diff_attrs)
            db = rast_db[b].reshape(-1, 4)[covered]
            d0, d1 = (a0 - a2)[:, idx], (a1 - a2)[:, idx]
            dx = d0 * db[:, 0:1] + d1 * db[:, 2:3]
            dy = d0 * db[:, 1:2] + d1 * db[:, 3:4]
            da = torch.stack([dx, dy], dim=-1).reshape(covered.shape[0], -1)
            full = torch.zeros(H * W, da.shape[-1], dtype=da.dtype, device=rast.device)
            das.append(full.index_put((covered,), da).reshape(H, W, -1))
    out_da = torch.stack(das) if das else torch.zeros(0, device=rast.device)
    return torch.stack(outs), out_da


_EDGE_CACHE: dict = {}


def _opposite_faces(tri: Tensor) -> Tensor:
    """[Nf, 3]: the face across the edge opposite vertex k of each face (-1 at a boundary).
    Cached per face tensor (by storage, shape and version), as a renderer reuses one per mesh."""
    key = (tri.data_ptr(), tuple(tri.shape), tri.dtype, tri.device, tri._version)
    cached = _EDGE_CACHE.get(key)
    # a freed face tensor's memory may be reused by a new one with the same key: check identity
    if cached is not None and cached[0]() is tri:
        return cached[1]
    tri_ref = weakref.ref(tri)
    tri = tri.long()
    nf = tri.shape[0]
    e = torch.stack([tri[:, [1, 2]], tri[:, [2, 0]], tri[:, [0, 1]]], dim=1)  # edge k opposite v k
    e = torch.sort(e, dim=-1).values.reshape(-1, 2)
    nv = int(tri.max()) + 1 if nf else 1
    keys = e[:, 0] * nv + e[:, 1]
    order = torch.argsort(keys)
    sk = keys[order]
    owner = order // 3
    opp = torch.full((nf * 3,), -1, dtype=torch.long, device=tri.device)
    same = sk[1:] == sk[:-1]
    first, second = order[:-1][same], order[1:][same]
    opp[first] = owner[1:][same]
    opp[second] = owner[:-1][same]
    opp = opp.reshape(nf, 3)
    if len(_EDGE_CACHE) > 8:
        _EDGE_CACHE.clear()
    _EDGE_CACHE[key] = (tri_ref, opp)
    return opp


def torch_antialias(
    color: Float[Tensor, "B H W C"],
    rast: Float[Tensor, "B H W 4"],
    pos: Float[Tensor, "B Nv 4"],
    tri: Integer[Tensor, "Nf 3"],
) -> Float[Tensor, "B H W C"]:
    opposite = _opposite_faces(tri)
    tri = tri.long()
    B, H, W, C = color.shape
    results = []
    for b in range(B):
        col = color[b].reshape(-1, C)
        fid = rast[b, ..., 3].detach().reshape(-1).long() - 1
        zbuf = rast[b, ..., 2].detach().reshape(-1)
        x, y, _, w = _to_pixels(pos[b], H, W)
        # screen-space orientation of every face, to tell silhouette edges from interior ones
        with torch.no_grad():
            txd, tyd = x.detach()[tri], y.detach()[tri]
            facing = _edge(txd[:, 0], tyd[:, 0], txd[:, 1], tyd[:, 1], txd[:, 2], tyd[:, 2]) > 0
        grid = torch.arange(H * W, device=color.device).reshape(H, W)
        delta = torch.zeros_like(col)
        for pa, pb in ((grid[:, :-1], grid[:, 1:]), (grid[:-1, :], grid[1:, :])):
            pa, pb = pa.reshape(-1), pb.reshape(-1)
            fa, fb = fid[pa], fid[pb]
            diff = fa != fb
            pa, pb, fa, fb = pa[diff], pb[diff], fa[diff], fb[diff]
            # the occluding side holds the triangle whose silhouette we look for
            a_front = (fb < 0) | ((fa >= 0) & (zbuf[pa] <= zbuf[pb]))
            p_in = torch.where(a_front, pa, pb)
            p_out = torch.where(a_front, pb, pa)
            f_in = torch.where(a_front, fa, fb)
            f_out = torch.where(a_front, fb, fa)
            cx_in, cy_in = (p_in % W) + 0.5, torch.div(p_in, W, rounding_mode="floor") + 0.5
            cx_out, cy_out = (p_out % W) + 0.5, torch.div(p_out, W, rounding_mode="floor") + 0.5
            with torch.no_grad():
                # walk along the segment in -> out from f_in across interior edges (front-facing
                # neighbours) until it leaves through a silhouette edge: with triangles smaller
                # than a pixel the silhouette triangle rarely holds the inner pixel centre
                face = f_in.clone()
                found = torch.zeros_like(face, dtype=torch.bool)
                alive = torch.ones_like(found)
                k_exit = torch.zeros_like(face)
                for _ in range(MAX_SILHOUETTE_WALK):
                    idx = torch.nonzero(alive & ~found).squeeze(1)
                    if idx.numel() == 0:
                        break
                    f = face[idx]
                    cxy = tri[f]
                    li = torch.stack(
                        _screen_barycentrics(
                            x.detach()[cxy], y.detach()[cxy], cx_in[idx], cy_in[idx]
                        ),
                        -1,
                    )
                    lo = torch.stack(
                        _screen_barycentrics(
                            x.detach()[cxy], y.detach()[cxy], cx_out[idx], cy_out[idx]
                        ),
                        -1,
                    )
                    # edges the segment leaves the triangle through: barycentric decreasing
                    leaving = li > lo
                    t_all = li / (li - lo).clamp(min=1e-12)
                    t_all = torch.where(leaving, t_all, torch.full_like(t_all, float("inf")))
                    t_min, k = t_all.min(dim=-1)
                    across = opposite[f, k]
                    is_sil = (across < 0) | (facing[across.clamp(min=0)] != facing[f])
                    # out of the segment, or into the outer pixel's own triangle: no silhouette
                    dead = (
                        ~torch.isfinite(t_min) | (t_min >= 1) | (~is_sil & (across == f_out[idx]))
                    )
                    hit = is_sil & ~dead
                    found[idx[hit]] = True
                    k_exit[idx[hit]] = k[hit]
                    alive[idx[dead]] = False
                    step = ~hit & ~dead
                    face[idx[step]] = across[step]
                ok = found
            # barycentrics again, differentiable, for the pairs with a silhouette only (others
            # may have ended on degenerate triangles, whose infinities would poison the backward)
            corners = tri[face[ok]]
            tx, ty = x[corners], y[corners]
            lam_in = torch.stack(_screen_barycentrics(tx, ty, cx_in[ok], cy_in[ok]), -1)
            lam_out = torch.stack(_screen_barycentrics(tx, ty, cx_out[ok], cy_out[ok]), -1)
            k = k_exit[ok]
            li = lam_in.gather(1, k[:, None]).squeeze(1)
            lo = lam_out.gather(1, k[:, None]).squeeze(1)
            t = li / (li - lo)  # crossing point along in -> out, differentiable in pos
            p_in, p_out = p_in[ok], p_out[ok]
            c_in, c_out = col[p_in], col[p_out]
            # edge inside the outer pixel: that pixel is partly covered by the inner colour;
            # edge inside the inner pixel: the inner pixel is partly uncovered
            cover_out = (t - 0.5).clamp(min=0)[:, None]
            uncover_in = (0.5 - t).clamp(min=0)[:, None]
            delta = delta.index_add(0, p_out, cover_out * (c_in - c_out))
            delta = delta.index_add(0, p_in, uncover_in * (c_out - c_in))
        results.append((col + delta).reshape(H, W, C))
    return torch.stack(results)


# ---------------------------------------------------------------------------------------------
# the two backends, one interface, and the one place that picks between them
# ---------------------------------------------------------------------------------------------
CONTEXT_TYPES = ("gl", "cuda")


class TorchRasterizer:
    """The pure-PyTorch backend (any device; ``context_type`` does not apply)."""

    name = "torch"
    ctx = None

    def rasterize(self, pos, tri, resolution):
        return torch_rasterize(pos.float(), tri, resolution)

    def antialias(self, color, rast, pos, tri):
        return torch_antialias(color.float(), rast, pos.float(), tri)

    def interpolate(self, attr, rast, tri, rast_db, diff_attrs):
        return torch_interpolate(attr.float(), rast, tri, rast_db=rast_db, diff_attrs=diff_attrs)


class NVDiffrastRasterizer:
    """nvdiffrast's kernels through an OpenGL (``gl``) or CUDA (``cuda``) context."""

    name = "nvdiffrast"

    def __init__(self, context_type: str, device: torch.device) -> None:
        import nvdiffrast.torch as dr  # noqa: PLC0415 - CUDA-only extension, imported lazily

        self.dr = dr
        if context_type == "gl":
            self.ctx = dr.RasterizeGLContext(device=device)
        else:
            self.ctx = dr.RasterizeCudaContext(device=device)

    def rasterize(self, pos, tri, resolution):
        return self.dr.rasterize(self.ctx, pos.float(), tri.int(), resolution, grad_db=True)

    def antialias(self, color, rast, pos, tri):
        return self.dr.antialias(color.float(), rast, pos.float(), tri.int())

    def interpolate(self, attr, rast, tri, rast_db, diff_attrs):
        return self.dr.interpolate(
            attr.float(), rast, tri.int(), rast_db=rast_db, diff_attrs=diff_attrs
        )


def make_rasterizer(
    context_type: str, device: torch.device
) -> Union[TorchRasterizer, NVDiffrastRasterizer]:
    """nvdiffrast when it imports and ``device`` is CUDA, else the pure-PyTorch backend."""
    if context_type not in CONTEXT_TYPES:
        raise ConfigError(
            f"context_type: unknown rasterizer context '{context_type}' (use 'gl' or 'cuda')"
        )
    available = _nvdiffrast_available()
    if device.type == "cuda" and available:
        return NVDiffrastRasterizer(context_type, device)
    reasons = [] if available else ["nvdiffrast is not installed"]
    if device.type != "cuda":
        reasons.append(f"the device is {device.type}")
    report_fallback("rasterizer", f"nvdiffrast ('{context_type}' context)", " and ".join(reasons))
    return TorchRasterizer()


# ---------------------------------------------------------------------------------------------
# the public context
# ---------------------------------------------------------------------------------------------
class NVDiffRasterizerContext:
    """nvdiffrast on CUDA when installed (``context_type`` "gl" or "cuda"), else pure PyTorch;
    ``backend`` names the one in use."""

    def __init__(self, context_type: str, device: Union[str, torch.device]) -> None:
        self.device = torch.device(device)
        self.context_type = context_type
        self.impl = make_rasterizer(context_type, self.device)
        self.backend = self.impl.name
        self.ctx = self.impl.ctx  # nvdiffrast's context, None for the torch backend

    def vertex_transform(
        self, verts: Float[Tensor, "Nv 3"], mvp_mtx: Float[Tensor, "B 4 4"]
    ) -> Float[Tensor, "B Nv 4"]:
        verts_homo = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1)
        return torch.matmul(verts_homo, mvp_mtx.permute(0, 2, 1))

    def rasterize(
        self,
        pos: Float[Tensor, "B Nv 4"],
        tri: Integer[Tensor, "Nf 3"],
        resolution: Union[int, Tuple[int, int]],
    ) -> Tuple[Float[Tensor, "B H W 4"], Float[Tensor, "B H W 4"]]:
        # ints, or one-element tensors as a default collate makes of batch["height"]
        if isinstance(resolution, (list, tuple)):
            resolution = as_resolution(*resolution)
        else:
            resolution = as_resolution(resolution, resolution)
        return self.impl.rasterize(pos, tri, resolution)

    def rasterize_one(
        self,
        pos: Float[Tensor, "Nv 4"],
        tri: Integer[Tensor, "Nf 3"],
        resolution: Union[int, Tuple[int, int]],
    ) -> Tuple[Float[Tensor, "H W 4"], Float[Tensor, "H W 4"]]:
        rast, rast_db = self.rasterize(pos[None, ...], tri, resolution)
        return rast[0], rast_db[0]

    def antialias(
        self,
        color: Float[Tensor, "B H W C"],
        rast: Float[Tensor, "B H W 4"],
        pos: Float[Tensor, "B Nv 4"],
        tri: Integer[Tensor, "Nf 3"],
    ) -> Float[Tensor, "B H W C"]:
        return self.impl.antialias(color, rast, pos, tri)

    def interpolate(
        self,
        attr: Float[Tensor, "#B Nv C"],  # a batch of 1 is shared by every image
        rast: Float[Tensor, "B H W 4"],
        tri: Integer[Tensor, "Nf 3"],
        rast_db: Optional[Float[Tensor, "B H W 4"]] = None,
        diff_attrs: Optional[Union[str, List[int]]] = None,
    ) -> Tuple[Float[Tensor, "B H W C"], Tensor]:
        return self.impl.interpolate(attr, rast, tri, rast_db, diff_attrs)

    def interpolate_one(
        self,
        attr: Float[Tensor, "Nv C"],
        rast: Float[Tensor, "B H W 4"],
        tri: Integer[Tensor, "Nf 3"],
        rast_db: Optional[Float[Tensor, "B H W 4"]] = None,
        diff_attrs: Optional[Union[str, List[int]]] = None,
    ) -> Tuple[Float[Tensor, "B H W C"], Tensor]:
        return self.interpolate(attr[None, ...], rast, tri, rast_db, diff_attrs)
