"""Fantasia3D (Chen et al. 2023): geometry and appearance learnt apart, both by score distillation
of Stable Diffusion through a rasterised mesh.

Geometry stage (``texture: false``): a DMTet surface (``implicit-sdf`` with a deformable tet
grid, initialised to a sphere, an ellipsoid or a mesh) is rasterised without colour. For the
first ``latent_steps`` steps the guidance receives the normal map in [-1, 1] and the silhouette
as a 4-channel latent (resized to the latent size, no VAE); afterwards the normal map is encoded
as an image. Appearance stage (``texture: true``): the geometry stage's surface, frozen in a
``tetrahedra-sdf-grid``, is shaded by a PBR material whose texture field is distilled from the
rendered colour (with a ControlNet guidance, the view-space normals condition it)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.guidance.controlnet_guidance import ControlNetGuidance
from threestudio.systems.base import BaseLift3DSystem
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

    cfg: Config

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.renderer(**batch, render_rgb=self.cfg.texture)

    def guidance_input(self, out: Dict[str, Any]) -> Dict[str, Any]:
        """What the geometry stage feeds the guidance at the current step."""
        if self.true_global_step < self.cfg.latent_steps:
            latent = torch.cat([out["comp_normal"] * 2.0 - 1.0, out["opacity"]], dim=-1)
            return {"rgb": latent, "rgb_as_latents": True}
        return {"rgb": out["comp_normal"], "rgb_as_latents": False}

    def training_step(self, batch, batch_idx):
        out = self(batch)
        if not self.cfg.texture:
            inp = self.guidance_input(out)
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
        """Colour (appearance stage only), silhouette and normals."""
        items = []
        if self.cfg.texture:
            items.append(
                {
                    "type": "rgb",
                    "img": out["comp_rgb"][0],
                    "kwargs": {"data_format": "HWC", "data_range": (0, 1)},
                }
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
