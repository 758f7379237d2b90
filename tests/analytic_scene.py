"""Tiny analytic scenes for camera tests (pose gradients, camera refinement): every field,
colour and background is a closed-form smooth function of position or direction, in whatever
dtype the rays are (float64 for finite differences), with nothing learned."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.data.uncond import look_at
from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseExplicitGeometry, BaseImplicitGeometry
from threestudio.models.materials.base import BaseMaterial
from threestudio.models.mesh import Mesh
from threestudio.utils.ops import (
    get_mvp_matrix,
    get_projection_matrix,
    get_ray_directions,
    get_rays,
)

# three Gaussian blobs at different depths (parallax tells rotation from translation), each
# with its own colour
BLOB_CENTRES = ((0.0, 0.0, 0.0), (0.25, 0.3, 0.15), (-0.3, -0.2, -0.2))
BLOB_COLOURS = ((0.9, 0.2, 0.1), (0.1, 0.8, 0.2), (0.2, 0.3, 0.9))
BLOB_SIGMA = 0.15
BLOB_DENSITY = 25.0


def position_colour(points):
    """A smooth colour field: every channel varies across the scene box."""
    return 0.5 + 0.4 * torch.sin(3.0 * points + torch.tensor([0.0, 1.0, 2.0]).to(points))


class AnalyticBlobs(BaseImplicitGeometry):
    """Density: a sum of Gaussian blobs; features: the density-weighted mix of their colours."""

    def _blobs(self, points):
        centres = torch.tensor(BLOB_CENTRES).to(points)
        d2 = ((points[:, None, :] - centres[None]) ** 2).sum(-1)  # [N, K]
        return BLOB_DENSITY * torch.exp(-d2 / (2 * BLOB_SIGMA**2))

    def forward_density(self, points):
        return self._blobs(points).sum(-1, keepdim=True)

    def forward(self, points, output_normal=False):
        blobs = self._blobs(points)
        density = blobs.sum(-1, keepdim=True)
        colours = torch.tensor(BLOB_COLOURS).to(points)
        features = (blobs @ colours) / density.clamp_min(1e-8)
        out = {"density": density, "features": features}
        if output_normal:
            out["normal"] = F.normalize(points, dim=-1)
        return out


class AnalyticSphereSDF(BaseImplicitGeometry):
    """SDF of a sphere of radius 0.5 with the smooth colour field."""

    def forward_sdf(self, points):
        return points.norm(dim=-1, keepdim=True) - 0.5

    def forward(self, points, output_normal=False):
        return {
            "sdf": self.forward_sdf(points),
            "features": position_colour(points),
            "normal": F.normalize(points, dim=-1),
        }


def octahedron(radius: float = 0.5):
    v = radius * torch.tensor(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
        dtype=torch.float64,
    )
    f = torch.tensor(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    )
    return v, f


class FixedMesh(BaseExplicitGeometry):
    """An octahedron of radius 0.5 textured by the smooth colour field."""

    @dataclass
    class Config(BaseExplicitGeometry.Config):
        dtype: str = "float64"

    cfg: Config

    def configure(self):
        super().configure()
        v, f = octahedron()
        self.v_pos = v.to(getattr(torch, self.cfg.dtype))
        self.t_pos_idx = f

    def isosurface(self):
        return Mesh(self.v_pos, self.t_pos_idx)

    def forward(self, points, output_normal=False):
        return {"features": position_colour(points)}


class FeatureColour(BaseMaterial):
    def forward(self, features, **kwargs):
        return features[..., :3]


class DirectionBackground(BaseBackground):
    """A colour that varies smoothly with the view direction (so rays_d reaches it)."""

    def forward(self, dirs):
        return 0.5 + 0.3 * F.normalize(dirs, dim=-1)


def make_renderer(renderer_type: str, geometry, **cfg):
    return threestudio.find(renderer_type)(
        cfg, geometry=geometry, material=FeatureColour(), background=DirectionBackground()
    )


FOVY = math.radians(45.0)


def camera(elevation_deg: float, azimuth_deg: float, distance: float):
    """c2w [1, 4, 4] (float64) of a camera looking at the origin from these angles."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    position = torch.tensor(
        [
            [
                distance * math.cos(el) * math.cos(az),
                distance * math.cos(el) * math.sin(az),
                distance * math.sin(el),
            ]
        ]
    )
    _, c2w = look_at(position)
    return c2w.double()


def rays_of(c2w, size: int):
    """Unit rays [B, size, size, 3] of the cameras ``c2w`` (fovy 45 degrees)."""
    focal = 0.5 * size / math.tan(FOVY / 2)
    directions = get_ray_directions(size, size, focal).to(c2w)
    rays_o, rays_d = get_rays(directions, c2w, keepdim=True, normalize=True)
    return rays_o, rays_d


def camera_batch(c2w, size: int, index=None):
    """A camera batch of the cameras ``c2w`` as a datamodule gives it: rays, matrices and
    ``index`` (a multi-view batch) when given."""
    rays_o, rays_d = rays_of(c2w, size)
    proj = get_projection_matrix(FOVY, 1.0, 0.01, 100.0).to(c2w)
    proj = proj[None].expand(c2w.shape[0], -1, -1)
    batch = {
        "rays_o": rays_o,
        "rays_d": rays_d,
        "c2w": c2w,
        "mvp_mtx": get_mvp_matrix(c2w, proj),
        "proj_mtx": proj,
        "camera_positions": c2w[:, :3, 3],
        "light_positions": torch.zeros(c2w.shape[0], 3).to(c2w),
        "fovy": torch.full((c2w.shape[0],), FOVY).to(c2w),
        "height": size,
        "width": size,
    }
    if index is not None:
        batch["index"] = torch.as_tensor(index)
    return batch


def fix_samples(renderer, rays_o, rays_d):
    """Freeze the renderer's samples at those of these rays: sample selection is not
    differentiable by design, so gradients are compared for fixed samples."""
    samples = renderer.sample(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))
    renderer.sample = lambda o, d: samples
    return renderer
