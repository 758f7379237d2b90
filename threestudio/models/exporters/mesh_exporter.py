"""Export the geometry's isosurface as a mesh file, with textures baked in UV space.

Steps: isosurface -> (xatlas) UV unwrap -> rasterise the UV layout -> interpolate the surface points
of every texel -> ``geometry.export(points)`` / ``material.export(points, **geo_out)`` -> fill the
texels outside every chart from their neighbours (so mip-mapping and bilinear lookups do not bleed
the empty background across seams) -> texture maps handed to the saver.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import threestudio
from threestudio.kernels.rasterizer import NVDiffRasterizerContext
from threestudio.models.exporters.base import Exporter, ExporterOutput
from threestudio.models.mesh import Mesh
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Bool, Dict, Float, List, Tensor

FORMATS = ("obj-mtl", "obj", "glb")
# material outputs -> texture slots understood by the savers
TEXTURE_SLOTS = {
    "albedo": "map_Kd",
    "metallic": "map_Pm",
    "roughness": "map_Pr",
    "bump": "map_Bump",
}


def fill_texture_holes(
    image: Float[Tensor, "H W C"], valid: Bool[Tensor, "H W"], max_steps: int = 64
) -> Float[Tensor, "H W C"]:
    """Grow the valid texels outwards: each step gives an empty texel the mean of its valid 3x3
    neighbours; texels still empty after ``max_steps`` get the mean of all valid texels."""
    img = image.permute(2, 0, 1)[None]
    mask = valid[None, None].to(image.dtype)
    img = img * mask
    for _ in range(max_steps):
        if bool(mask.min() > 0):
            break
        summed = F.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
        counts = F.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=False)
        grown = summed / counts.clamp(min=1e-8)
        new_mask = (counts > 0).to(mask.dtype)
        img = torch.where(mask > 0, img, grown * new_mask)
        mask = torch.maximum(mask, new_mask)
    if bool(mask.min() == 0) and bool(valid.any()):
        mean = image[valid].mean(0)[:, None, None]
        img = torch.where(mask > 0, img, mean[None])
    return img[0].permute(1, 2, 0)


@threestudio.register("mesh-exporter")
class MeshExporter(Exporter):
    @dataclass
    class Config(Exporter.Config):
        # obj-mtl (textures baked into map_Kd, ...) | obj (albedo as vertex colours) | glb
        fmt: str = "obj-mtl"
        save_name: str = "model"  # file name without extension
        save_normal: bool = False  # write vertex normals
        save_uv: bool = True  # unwrap UVs with xatlas (needed for textures)
        save_texture: bool = True  # bake the material's export() (obj: vertex colours)
        texture_size: int = 1024  # texels per side of each baked map
        texture_format: str = "jpg"  # image format of the maps
        # attributes to set on xatlas.ChartOptions / xatlas.PackOptions
        xatlas_chart_options: dict = field(default_factory=dict)
        xatlas_pack_options: dict = field(default_factory=dict)  # see xatlas_chart_options
        context_type: str = "gl"  # nvdiffrast context for baking: gl | cuda (checked on every backend; torch draws the same)

    cfg: Config

    def configure_exporter(self) -> None:
        if self.cfg.fmt not in FORMATS:
            raise ConfigError(f"fmt: unknown mesh format '{self.cfg.fmt}' (use one of {FORMATS})")
        if self.cfg.fmt in ("obj-mtl", "glb") and self.cfg.save_texture and not self.cfg.save_uv:
            raise ConfigError(
                f"save_texture: a textured '{self.cfg.fmt}' needs UVs (set save_uv: true, or "
                "fmt: obj for vertex colours)"
            )
        self.ctx = NVDiffRasterizerContext(self.cfg.context_type, self.device)

    def __call__(self) -> List[ExporterOutput]:
        mesh: Mesh = self.geometry.isosurface()
        if self.cfg.fmt == "obj":
            return self.export_obj(mesh)
        return self.export_textured(mesh)

    def _base_params(self, mesh: Mesh) -> Dict:
        return {
            "mesh": mesh,
            "save_mat": False,
            "save_normal": self.cfg.save_normal,
            "save_uv": self.cfg.save_uv,
            "save_vertex_color": False,
            "map_Kd": None,
            "map_Ks": None,
            "map_Bump": None,
            "map_Pm": None,
            "map_Pr": None,
            "map_format": self.cfg.texture_format,
        }

    @torch.no_grad()
    def material_export(self, points: Float[Tensor, "N 3"]) -> Dict[str, Tensor]:
        """The material's exported values at surface points; nothing for a geometry that
        exports nothing (no features, e.g. a geometry stage that renders normals only)."""
        geo_out = self.geometry.export(points=points)
        if not geo_out:
            threestudio.warn("mesh-exporter: the geometry exports no features; no texture baked")
            return {}
        return self.material.export(points=points, **geo_out)

    def bake_textures(self, mesh: Mesh) -> Dict[str, Float[Tensor, "H W _"]]:
        """Texture maps (by saver slot) of the material's exported values over the UV layout."""
        size = self.cfg.texture_size
        uv_clip = mesh.v_tex * 2.0 - 1.0
        uv_clip4 = torch.cat(
            [uv_clip, torch.zeros_like(uv_clip[:, :1]), torch.ones_like(uv_clip[:, :1])], dim=-1
        )
        rast, _ = self.ctx.rasterize_one(uv_clip4, mesh.t_tex_idx.int(), (size, size))
        valid = rast[..., 3] > 0
        # the UV faces are the position faces (same order), so the ids index t_pos_idx too
        points, _ = self.ctx.interpolate_one(mesh.v_pos, rast[None], mesh.t_pos_idx.int())
        points = points[0]
        mat_out = self.material_export(points[valid])
        maps = {}
        for name, slot in TEXTURE_SLOTS.items():
            if name not in mat_out:
                continue
            values = mat_out[name].detach().to(points)
            image = torch.zeros(
                size, size, values.shape[-1], dtype=values.dtype, device=values.device
            )
            image[valid] = values
            maps[slot] = fill_texture_holes(image, valid)
        if not maps:
            threestudio.warn(
                f"mesh-exporter: the material exports none of {list(TEXTURE_SLOTS)}; "
                "no texture written"
            )
        return maps

    def export_textured(self, mesh: Mesh) -> List[ExporterOutput]:
        params = self._base_params(mesh)
        params["save_mat"] = self.cfg.fmt == "obj-mtl"
        if self.cfg.save_uv:
            mesh.unwrap_uv(self.cfg.xatlas_chart_options, self.cfg.xatlas_pack_options)
        if self.cfg.save_texture:
            params.update(self.bake_textures(mesh))
        ext = "obj" if self.cfg.fmt == "obj-mtl" else "glb"
        return [
            ExporterOutput(save_name=f"{self.cfg.save_name}.{ext}", save_type=ext, params=params)
        ]

    def export_obj(self, mesh: Mesh) -> List[ExporterOutput]:
        params = self._base_params(mesh)
        if self.cfg.save_uv:
            mesh.unwrap_uv(self.cfg.xatlas_chart_options, self.cfg.xatlas_pack_options)
        if self.cfg.save_texture:
            mat_out = self.material_export(mesh.v_pos)
            if "albedo" in mat_out:
                mesh.set_vertex_color(mat_out["albedo"].detach())
                params["save_vertex_color"] = True
            else:
                threestudio.warn("mesh-exporter: the material exports no albedo; no vertex colours")
        return [
            ExporterOutput(save_name=f"{self.cfg.save_name}.obj", save_type="obj", params=params)
        ]
