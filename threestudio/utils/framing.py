"""Where a trained object is, for framing the test turntable on it
(``data.eval_fit_object``, ``data.eval_fit_mode``)."""

import math
from typing import Optional, Sequence, Tuple, Union

import torch

import threestudio
from threestudio.utils.errors import UserError
from threestudio.utils.typing import Bool, Float, Tensor


def object_vertices(geometry) -> Optional[Float[Tensor, "N 3"]]:
    """The vertices of the object's isosurface (components smaller than the geometry's outlier
    threshold dropped, as an export drops them), or None for a geometry without one (a
    warning)."""
    if not hasattr(geometry, "isosurface"):
        threestudio.warn(
            f"data.eval_fit_object: {type(geometry).__name__} has no isosurface to frame; "
            "the test views keep data.eval_camera_distance"
        )
        return None
    try:
        with torch.no_grad():
            v_pos = geometry.isosurface().v_pos.detach().float()
    except UserError as e:  # an empty surface: nothing to frame
        threestudio.warn(f"data.eval_fit_object: {e}; the test views keep the fixed camera")
        return None
    return v_pos


def object_bounds(geometry) -> Optional[Tuple[Float[Tensor, "3"], float]]:
    """The centre of the object's bounding box and the radius of the sphere about it holding
    every vertex of its isosurface, or None for a geometry without one (a warning)."""
    v_pos = object_vertices(geometry)
    if v_pos is None:
        return None
    return bounds_of(v_pos)


def bounds_of(v_pos: Float[Tensor, "N 3"]) -> Tuple[Float[Tensor, "3"], float]:
    """The centre of the points' bounding box and the radius about it holding them all."""
    lo, hi = v_pos.amin(dim=0), v_pos.amax(dim=0)
    center = (lo + hi) / 2
    radius = float((v_pos - center).norm(dim=-1).max())
    return center, radius


def frame_extent(
    points: Float[Tensor, "N 3"],
    center: Float[Tensor, "3"],
    distance: float,
    elevation_deg: float,
    azimuths_deg: Sequence[float],
    fovy_deg: float,
    aspect: float = 1.0,
) -> float:
    """How far the points reach across the frame of a turntable looking at ``center`` from
    ``distance`` (up +z, as ``look_at``): the largest |x| or |y| of their projections over the
    views, in units of the half frame (1 touches the edge; a point behind a camera is inf)."""
    pts = points.detach().double().reshape(-1, 3)
    ctr = center.detach().double().reshape(3).to(pts.device)
    elev = math.radians(elevation_deg)
    azim = torch.tensor([math.radians(a) for a in azimuths_deg], dtype=torch.float64)
    offset = torch.stack(
        [
            math.cos(elev) * torch.cos(azim),
            math.cos(elev) * torch.sin(azim),
            torch.full_like(azim, math.sin(elev)),
        ],
        dim=-1,
    ).to(pts.device)
    forward = -offset  # unit vectors from each camera to the centre
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=pts.device).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    cam_up = torch.cross(right, forward, dim=-1)
    rel = pts[None] - (ctr + distance * offset)[:, None]  # V N 3
    depth = (rel * forward[:, None]).sum(-1)
    if bool((depth <= 1e-9).any()):
        return math.inf
    tan_y = math.tan(math.radians(fovy_deg) / 2)
    x = (rel * right[:, None]).sum(-1) / (depth * tan_y * aspect)
    y = (rel * cam_up[:, None]).sum(-1) / (depth * tan_y)
    return float(torch.maximum(x.abs(), y.abs()).max())


def contain_distance(
    points: Float[Tensor, "N 3"],
    center: Float[Tensor, "3"],
    share: float,
    elevation_deg: float,
    azimuths_deg: Sequence[float],
    fovy_deg: float,
    aspect: float = 1.0,
    min_distance: float = 0.0,
) -> float:
    """The nearest camera distance (not below ``min_distance``) at which every point projects
    within ``share`` of the half frame in every view of the turntable about ``center``. The
    extent falls as the camera backs away, so a bisection finds it."""

    def fits(d: float) -> bool:
        return (
            frame_extent(points, center, d, elevation_deg, azimuths_deg, fovy_deg, aspect) <= share
        )

    lo = max(min_distance, 1e-6)
    if fits(lo):
        return lo
    hi = 2 * lo
    while not fits(hi):
        hi *= 2
        if hi > 1e6:
            raise ValueError("data.eval_fit_mode=contain: no camera distance holds the object")
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def inside_silhouettes(
    points: Float[Tensor, "N 3"],
    c2w: Float[Tensor, "V 4 4"],
    fovy: Union[float, Float[Tensor, "V"]],
    opacity: Float[Tensor, "V H W"],
    threshold: float = 0.5,
    dilate: int = 1,
) -> Bool[Tensor, "N"]:
    """Which points project onto a pixel of opacity ``threshold`` or more (the silhouette grown
    by ``dilate`` pixels) in every view (OpenGL cameras ``c2w``, vertical field of view ``fovy``
    in radians, as the rays of ``get_ray_directions``): the points inside the visual hull of
    the rendered object. A point behind a camera or outside its image is outside."""
    V, H, W = opacity.shape
    mask = (opacity >= threshold).float()[:, None]
    if dilate > 0:
        mask = torch.nn.functional.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate)
    mask = mask[:, 0] > 0
    pts = points.detach().float().reshape(-1, 3).to(opacity.device)
    c2w = c2w.detach().float().to(opacity.device)
    rel = pts[None] - c2w[:, None, :3, 3]  # V N 3
    cam = torch.einsum("vnk,vkj->vnj", rel, c2w[:, :3, :3])  # camera axes: x right, y up, -z
    depth = -cam[..., 2]
    fovy = torch.as_tensor(fovy).detach().float().reshape(-1).expand(V).to(opacity.device)
    focal = 0.5 * H / torch.tan(0.5 * fovy)
    safe = depth.clamp_min(1e-9)
    col = torch.floor(W / 2 + focal[:, None] * cam[..., 0] / safe)
    row = torch.floor(H / 2 - focal[:, None] * cam[..., 1] / safe)
    valid = (depth > 1e-9) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    v = torch.arange(V, device=opacity.device)[:, None].expand_as(col)
    hit = mask[v, row.clamp(0, H - 1).long(), col.clamp(0, W - 1).long()] & valid
    return hit.all(dim=0)
