"""Fantasia3D (Chen et al. 2023): geometry and appearance learnt apart, both by score distillation
of Stable Diffusion through a rasterised mesh.

Geometry stage (``texture: false``): a DMTet surface (``implicit-sdf`` with a deformable tet
grid, initialised to a sphere, an ellipsoid or a mesh) is rasterised without colour. For the
first ``latent_steps`` steps the guidance receives the normal map in [-1, 1] and the silhouette
as a 4-channel latent (resized to the latent size, no VAE); afterwards the normal map is encoded
as an image (or, with ``geometry_render: shaded``, the surface lit in one learnt colour). Appearance stage (``texture: true``): the geometry stage's surface, frozen in a
``tetrahedra-sdf-grid``, is shaded by a PBR material whose texture field is distilled from the
rendered colour (with a ControlNet guidance, the view-space normals condition it)."""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.models.guidance.controlnet_guidance import ControlNetGuidance
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, List, Tensor


def viewspace_normal(
    comp_normal: Float[Tensor, "B H W 3"],
    opacity: Float[Tensor, "B H W 1"],
    c2w: Float[Tensor, "B 4 4"],
) -> Float[Tensor, "B H W 3"]:
    """The rendered world normals (in [0, 1]) turned into camera space and encoded in [0, 1],
    over the camera-facing normal (0, 0, 1) where nothing is rendered: a normal-map control
    image."""
    world = comp_normal * 2.0 - 1.0
    w2c = c2w[:, :3, :3].transpose(1, 2)  # the rotation's inverse
    view = F.normalize(torch.einsum("bij,bhwj->bhwi", w2c, world), dim=-1)
    background = torch.tensor([0.0, 0.0, 1.0], dtype=view.dtype, device=view.device)
    return (torch.lerp(background.expand_as(view), view, opacity) + 1.0) / 2.0


@threestudio.register("fantasia3d-system")
class Fantasia3D(BaseLift3DSystem):
    @dataclass
    class Config(BaseLift3DSystem.Config):
        # geometry stage: steps during which the normal map and silhouette are the latent
        latent_steps: int = 1000
        texture: bool = False  # the appearance stage (renders colour; the geometry is frozen)
        # geometry stage after latent_steps, what the guidance sees: normal (the normal map, as
        # published) | shaded (the surface lit by a point light at the camera's light position,
        # ambient + diffuse, in one learned uniform colour over a white background: a render of
        # the shape alone for a model that has never seen a normal map, such as the bundled one)
        geometry_render: str = "normal"
        shaded_ambient: float = 0.3  # shaded: the light's ambient share
        shaded_diffuse: float = 0.7  # shaded: the light's diffuse share

    cfg: Config

    def configure(self) -> None:
        super().configure()
        if self.cfg.geometry_render not in ("normal", "shaded"):
            raise ConfigError(
                f"system.geometry_render: unknown value '{self.cfg.geometry_render}' "
                "(use normal or shaded)"
            )
        if self.cfg.geometry_render == "shaded" and not self.cfg.texture:
            # the shaded render's one colour (a logit), learnt with the shape
            self.shaded_color = nn.Parameter(torch.zeros(3))

    def shaded(
        self, out: Dict[str, Any], light_positions: Float[Tensor, "B 3"]
    ) -> Float[Tensor, "B H W 3"]:
        """The surface in one colour, lit from ``light_positions`` (a directional light from
        the light's direction), over white."""
        normal = F.normalize(out["comp_normal"] * 2.0 - 1.0, dim=-1)
        light = F.normalize(light_positions, dim=-1)[:, None, None, :]
        diffuse = (normal * light).sum(-1, keepdim=True).clamp(min=0.0)
        shade = self.cfg.shaded_ambient + self.cfg.shaded_diffuse * diffuse
        color = torch.sigmoid(self.shaded_color) * shade
        opacity = out["opacity"]
        return color * opacity + (1.0 - opacity)

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.renderer(**batch, render_rgb=self.cfg.texture)

    def guidance_input(self, out: Dict[str, Any], batch: Dict[str, Any]) -> Dict[str, Any]:
        """What the geometry stage feeds the guidance at the current step."""
        if self.true_global_step < self.cfg.latent_steps:
            latent = torch.cat([out["comp_normal"] * 2.0 - 1.0, out["opacity"]], dim=-1)
            return {"rgb": latent, "rgb_as_latents": True}
        if self.cfg.geometry_render == "shaded":
            return {"rgb": self.shaded(out, batch["light_positions"]), "rgb_as_latents": False}
        return {"rgb": out["comp_normal"], "rgb_as_latents": False}

    def training_step(self, batch, batch_idx):
        out = self(batch)
        if not self.cfg.texture:
            inp = self.guidance_input(out, batch)
            guidance_out = self.guidance(
                inp["rgb"], self.prompt_utils, **batch, rgb_as_latents=inp["rgb_as_latents"]
            )
        elif isinstance(self.guidance, ControlNetGuidance):
            cond = viewspace_normal(out["comp_normal"], out["opacity"], batch["c2w"])
            guidance_out = self.guidance(out["comp_rgb"], cond, self.prompt_utils, **batch)
        else:
            guidance_out = self.guidance(
                out["comp_rgb"], self.prompt_utils, **batch, rgb_as_latents=False
            )

        terms = self.guidance_terms(guidance_out)
        if not self.cfg.texture and self.lambda_of("normal_consistency", default=0) > 0:
            terms["loss_normal_consistency"] = out["mesh"].normal_consistency()
        return {"loss": self.weighted_loss(terms)}

    def eval_image_items(self, out: Dict[str, Any], batch: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Colour (the appearance stage's, or the geometry stage's shaded render), silhouette and
        normals."""
        items = []
        rgb = None
        if self.cfg.texture:
            rgb = out["comp_rgb"][0]
        elif self.cfg.geometry_render == "shaded":
            rgb = self.shaded(out, batch["light_positions"])[0]
        if rgb is not None:
            items.append(
                {"type": "rgb", "img": rgb, "kwargs": {"data_format": "HWC", "data_range": (0, 1)}}
            )
        items += [
            {
                "type": "grayscale",
                "img": out["opacity"][0, :, :, 0],
                "kwargs": {"cmap": None, "data_range": (0, 1)},
            },
            {
                "type": "rgb",
                "img": out["comp_normal"][0],
                "kwargs": {"data_format": "HWC", "data_range": (0, 1)},
            },
        ]
        return items
