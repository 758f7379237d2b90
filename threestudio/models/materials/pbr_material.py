"""Physically based shading (Fantasia3D's appearance stage): albedo, metallic and roughness (and
optionally a tangent-space bump) read off the geometry's features, lit by an HDR environment map
with split-sum image-based lighting (``threestudio.models.lights.split_sum``):

    colour = (1 - metallic) albedo * E_diffuse(n) + (F0 A + B) * E_specular(r, roughness)

with F0 = 0.04 (1 - metallic) + metallic albedo, r the view direction mirrored about n and
(A, B) from the BRDF table at (n . v, roughness); clamped to [0, 1]."""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.lights.split_sum import (
    EnvironmentLight,
    load_brdf_lut,
    sample_brdf_lut,
)
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import dot, get_activation
from threestudio.utils.paths import LOAD_DIR, shipped_path
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor

BRDF_LUT_PATH = os.path.join(LOAD_DIR, "lights", "bsdf_256_256.bin")


@threestudio.register("pbr-material")
class PBRMaterial(BaseMaterial):
    @dataclass
    class Config(BaseMaterial.Config):
        # a get_activation name applied to every feature channel: albedo (0:3), metallic (3),
        # roughness (4) and, with use_bump, the tangent-space normal offset (5:8)
        material_activation: str = "sigmoid"
        # lat-long HDR map (Radiance .hdr or .exr; top row = +y, as envlight reads it); relative
        # paths are read from the working directory, else from the repository
        environment_texture: str = "load/lights/mud_road_puresky_1k.hdr"
        environment_scale: float = 2.0  # multiplies the map's radiance
        min_metallic: float = 0.0  # the activated channel in [0, 1] maps to [min, max]
        max_metallic: float = 0.9  # see min_metallic
        min_roughness: float = 0.08  # the activated channel in [0, 1] maps to [min, max]
        max_roughness: float = 0.9  # see min_roughness
        # perturb the shading normal by features 5:8 in the mesh's tangent frame (needs tangents,
        # i.e. a UV-unwrapped mesh)
        use_bump: bool = True
        # rows of the finest prefiltered level (columns: twice as many); larger maps are
        # area-averaged down to it
        environment_resolution: int = 128

    cfg: Config

    def configure(self) -> None:
        for low, high in (("min_metallic", "max_metallic"), ("min_roughness", "max_roughness")):
            lo, hi = getattr(self.cfg, low), getattr(self.cfg, high)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ConfigError(f"{low}/{high} must satisfy 0 <= {low} <= {high} <= 1")
        self.requires_normal = True
        self.requires_tangent = self.cfg.use_bump
        self.n_channels = 8 if self.cfg.use_bump else 5
        self.activation = get_activation(self.cfg.material_activation)
        self.light = EnvironmentLight.from_file(
            shipped_path(self.cfg.environment_texture),
            scale=self.cfg.environment_scale,
            resolution=self.cfg.environment_resolution,
        )
        # saved with the weights under the established name (material.FG_LUT)
        self.FG_LUT: Float[Tensor, "1 R M 2"]
        self.register_buffer("FG_LUT", load_brdf_lut(BRDF_LUT_PATH))

    def decode(self, features: Float[Tensor, "*B Nf"]) -> Dict[str, Tensor]:
        """Albedo, metallic, roughness and (with use_bump) the unit tangent-space normal."""
        if features.shape[-1] < self.n_channels:
            raise ConfigError(
                f"pbr-material needs {self.n_channels} feature channels (albedo 3, metallic 1, "
                f"roughness 1{', bump 3' if self.cfg.use_bump else ''}); the geometry gives "
                f"{features.shape[-1]}: set system.geometry.n_feature_dims"
            )
        material = self.activation(features)
        out = {
            "albedo": material[..., 0:3],
            "metallic": material[..., 3:4] * (self.cfg.max_metallic - self.cfg.min_metallic)
            + self.cfg.min_metallic,
            "roughness": material[..., 4:5] * (self.cfg.max_roughness - self.cfg.min_roughness)
            + self.cfg.min_roughness,
        }
        if self.cfg.use_bump:
            # an offset from the unperturbed tangent-space normal (0, 0, 1)
            up = torch.tensor([0.0, 0.0, 1.0], dtype=material.dtype, device=material.device)
            bump = (material[..., 5:8] * 2.0 - 1.0) + up
            out["bump"] = F.normalize(bump.clamp(-1.0, 1.0), dim=-1)
        return out

    def shade(
        self,
        albedo: Float[Tensor, "*B 3"],
        metallic: Float[Tensor, "*B 1"],
        roughness: Float[Tensor, "*B 1"],
        normal: Float[Tensor, "*B 3"],
        viewdirs: Float[Tensor, "*B 3"],
    ) -> Float[Tensor, "*B 3"]:
        """The split-sum colour at unit ``normal`` seen along ``viewdirs`` (camera to point)."""
        v = -viewdirs
        n_dot_v = dot(normal, v)
        reflected = 2.0 * n_dot_v * normal - v
        fg = sample_brdf_lut(self.FG_LUT, n_dot_v, roughness)
        f0 = (1.0 - metallic) * 0.04 + metallic * albedo
        specular_albedo = f0 * fg[..., 0:1] + fg[..., 1:2]
        diffuse_albedo = (1.0 - metallic) * albedo
        diffuse_light = self.light(normal)
        specular_light = self.light(reflected, roughness)
        color = diffuse_albedo * diffuse_light + specular_albedo * specular_light
        return color.clamp(0.0, 1.0)

    def forward(
        self,
        features: Float[Tensor, "*B Nf"],
        viewdirs: Float[Tensor, "*B 3"],
        shading_normal: Float[Tensor, "*B 3"],
        tangent: Optional[Float[Tensor, "*B 3"]] = None,
        **kwargs,
    ) -> Float[Tensor, "*B 3"]:
        m = self.decode(features)
        normal = shading_normal
        if self.cfg.use_bump:
            if tangent is None:
                raise ConfigError(
                    "pbr-material with use_bump needs tangents from the renderer "
                    "(a mesh rasterizer); set system.material.use_bump=false otherwise"
                )
            bitangent = F.normalize(torch.cross(tangent, normal, dim=-1), dim=-1)
            bump = m["bump"]
            normal = F.normalize(
                tangent * bump[..., 0:1] - bitangent * bump[..., 1:2] + normal * bump[..., 2:3],
                dim=-1,
            )
        return self.shade(m["albedo"], m["metallic"], m["roughness"], normal, viewdirs)

    def export(self, features: Float[Tensor, "*N Nf"], **kwargs) -> Dict[str, Any]:
        m = self.decode(features)
        out = {k: m[k] for k in ("albedo", "metallic", "roughness")}
        if self.cfg.use_bump:
            out["bump"] = (m["bump"] + 1.0) / 2.0  # a normal map's [0, 1] encoding
        return out
