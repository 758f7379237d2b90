"""Renders an explicit geometry's mesh by rasterisation (nvdiffrast on CUDA, else the pure-PyTorch
rasteriser of ``threestudio.utils.rasterize``). Opacity and colours are antialiased across
silhouettes, so image losses move the mesh's vertices; colours come from querying the geometry's
texture field at the rasterised surface points and shading them with the material."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.kernels.rasterizer import NVDiffRasterizerContext
from threestudio.models.renderers.base import Rasterizer
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import as_resolution
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor

CONTEXT_TYPES = ("gl", "cuda")


def pixel_ray_directions(
    mvp_mtx: Float[Tensor, "B 4 4"],
    camera_positions: Float[Tensor, "B 3"],
    height: int,
    width: int,
) -> Float[Tensor, "B H W 3"]:
    """Unit world-space directions of the rays through the pixel centres, in the rasteriser's
    pixel convention (row i samples clip y = (i + 0.5) / H * 2 - 1)."""
    device = mvp_mtx.device
    ys = (torch.arange(height, device=device, dtype=torch.float64) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float64) + 0.5) / width * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    # any point with these NDC x, y lies on the pixel's ray: take NDC depth 0
    ndc = torch.stack([x, y, torch.zeros_like(x), torch.ones_like(x)], dim=-1)  # [H, W, 4]
    inv_mvp = torch.linalg.inv(mvp_mtx.double())  # [B, 4, 4]
    world = torch.einsum("bij,hwj->bhwi", inv_mvp, ndc)
    world = world[..., :3] / world[..., 3:]
    dirs = world - camera_positions.double()[:, None, None, :]
    return F.normalize(dirs, dim=-1).to(mvp_mtx.dtype)


@threestudio.register("nvdiff-rasterizer")
class NVDiffRasterizer(Rasterizer):
    @dataclass
    class Config(Rasterizer.Config):
        # nvdiffrast's OpenGL ("gl") or CUDA ("cuda") rasteriser; checked on every backend
        context_type: str = "gl"

    cfg: Config

    def configure_renderer(self) -> None:
        if self.cfg.context_type not in CONTEXT_TYPES:
            raise ConfigError(
                f"context_type: unknown rasterizer context '{self.cfg.context_type}' "
                f"(use one of {', '.join(CONTEXT_TYPES)})"
            )
        # built once, on the device of the first batch rendered (an OpenGL context is costly)
        self.ctx: Optional[NVDiffRasterizerContext] = None

    def context(self, device: torch.device) -> NVDiffRasterizerContext:
        if self.ctx is None or self.ctx.device != device:
            self.ctx = NVDiffRasterizerContext(self.cfg.context_type, device)
        return self.ctx

    def forward(
        self,
        mvp_mtx: Float[Tensor, "B 4 4"],
        camera_positions: Float[Tensor, "B 3"],
        light_positions: Float[Tensor, "B 3"],
        height: Any,
        width: Any,
        render_rgb: bool = True,
        **kwargs,
    ) -> Dict[str, Any]:
        height, width = as_resolution(height, width)  # ints or a collated batch's tensors
        batch_size = mvp_mtx.shape[0]
        mesh = self.geometry.isosurface()
        out: Dict[str, Any] = {"mesh": mesh}
        if mesh.t_pos_idx.shape[0] == 0:
            return self._render_empty(out, mvp_mtx, camera_positions, height, width, render_rgb)

        ctx = self.context(mvp_mtx.device)
        tri = mesh.t_pos_idx
        v_pos_clip: Float[Tensor, "B Nv 4"] = ctx.vertex_transform(mesh.v_pos, mvp_mtx)
        rast, _ = ctx.rasterize(v_pos_clip, tri, (height, width))
        mask = rast[..., 3:] > 0
        mask_f = mask.float()
        # antialiasing a hard mask is what gives silhouette losses a gradient
        out["opacity"] = ctx.antialias(mask_f, rast, v_pos_clip, tri)

        gb_normal, _ = ctx.interpolate_one(mesh.v_nrm, rast, tri)
        gb_normal = F.normalize(gb_normal, dim=-1)
        gb_normal_vis = torch.lerp(torch.zeros_like(gb_normal), (gb_normal + 1.0) / 2.0, mask_f)
        out["comp_normal"] = ctx.antialias(gb_normal_vis, rast, v_pos_clip, tri)  # in [0, 1]

        if not render_rgb:
            return out

        selector = mask[..., 0]
        gb_pos, _ = ctx.interpolate_one(mesh.v_pos, rast, tri)
        ray_dirs = pixel_ray_directions(mvp_mtx, camera_positions, height, width)
        # on the surface: from the camera to the point; elsewhere: the pixel's ray
        surface_dirs = F.normalize(gb_pos - camera_positions[:, None, None, :], dim=-1)
        gb_viewdirs = torch.where(mask, surface_dirs, ray_dirs)
        gb_light_positions = light_positions[:, None, None, :].expand(-1, height, width, -1)

        positions = gb_pos[selector]
        geo_out = self.geometry(positions, output_normal=False)
        extra: Dict[str, Tensor] = {}
        if self.material.requires_tangent:
            gb_tangent, _ = ctx.interpolate_one(mesh.v_tng, rast, tri)
            extra["tangent"] = F.normalize(gb_tangent, dim=-1)[selector]
        rgb_fg = self.material(
            viewdirs=gb_viewdirs[selector],
            positions=positions,
            light_positions=gb_light_positions[selector],
            shading_normal=gb_normal[selector],
            **extra,
            **geo_out,
        )
        gb_rgb_fg = torch.zeros(
            batch_size, height, width, rgb_fg.shape[-1], dtype=rgb_fg.dtype, device=rgb_fg.device
        )
        gb_rgb_fg[selector] = rgb_fg
        gb_rgb_bg = self.background(dirs=gb_viewdirs)
        gb_rgb = torch.lerp(gb_rgb_bg, gb_rgb_fg, mask_f)
        out.update(
            {
                "comp_rgb": ctx.antialias(gb_rgb, rast, v_pos_clip, tri),
                "comp_rgb_fg": gb_rgb_fg,
                "comp_rgb_bg": gb_rgb_bg,
            }
        )
        return out

    def _render_empty(
        self,
        out: Dict[str, Any],
        mvp_mtx: Float[Tensor, "B 4 4"],
        camera_positions: Float[Tensor, "B 3"],
        height: int,
        width: int,
        render_rgb: bool,
    ) -> Dict[str, Any]:
        """A mesh with no faces (e.g. an SDF with no zero crossing): background only."""
        threestudio.debug("nvdiff-rasterizer: the mesh is empty; rendering the background")
        batch_size = mvp_mtx.shape[0]
        zeros = torch.zeros(batch_size, height, width, 1, device=mvp_mtx.device)
        out.update({"opacity": zeros, "comp_normal": zeros.expand(-1, -1, -1, 3)})
        if render_rgb:
            dirs = pixel_ray_directions(mvp_mtx, camera_positions, height, width)
            bg = self.background(dirs=dirs)
            out.update({"comp_rgb": bg, "comp_rgb_fg": torch.zeros_like(bg), "comp_rgb_bg": bg})
        return out
