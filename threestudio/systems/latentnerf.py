"""Latent-NeRF and Sketch-Shape (Metzer et al. 2022): score distillation in Stable Diffusion's
latent space, optionally held to a rough guide mesh.

The latent stage renders the field's 4 feature channels (``no-material`` with 4 outputs) and
hands them to the guidance as latents (``rgb_as_latents``): no VAE encoder in the loop. The
refinement stage (``refinement: true``) starts from the latent stage's weights and renders RGB
through ``sd-latent-adapter-material``, which the guidance encodes as usual. With
``guide_shape`` (Sketch-Shape) the field's occupancy at the rendered samples is pulled toward the
inside/outside of the guide mesh, with less weight near its surface, where the sketch is least
trustworthy. The regularisers are DreamFusion's.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.models.geometry.implicit_sdf import AXES
from threestudio.models.materials.sd_latent_adapter_material import LATENT_TO_RGB
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.mesh_queries import MeshQueries
from threestudio.utils.paths import shipped_path
from threestudio.utils.typing import Any, Dict, Float, Int, Optional, Tensor, Tuple


def latents_to_rgb_preview(latents: Float[Tensor, "*B 4"]) -> Float[Tensor, "*B 3"]:
    """Latent-NeRF's fixed linear approximation of what the VAE decoder would show."""
    adapter = torch.as_tensor(LATENT_TO_RGB, dtype=latents.dtype, device=latents.device)
    return ((latents @ adapter + 1.0) / 2.0).clamp(0.0, 1.0)


def load_guide_shape(
    path: str, scale: float, up: str, front: str
) -> Tuple[Float[Tensor, "Nv 3"], Int[Tensor, "Nf 3"]]:
    """The guide mesh as Latent-NeRF places it: centred on the mean of its vertices, scaled so
    that its farthest vertex lies at ``scale`` from the centre, then turned so that the mesh's
    ``up`` axis becomes +z and its ``front`` axis +x."""
    path = shipped_path(path)
    if not os.path.isfile(path):
        raise UserError(f"system.guide_shape: mesh file not found: {path}")
    for key, axis in (("guide_shape_up", up), ("guide_shape_front", front)):
        if axis not in AXES:
            raise ConfigError(f"system.{key} must be one of {', '.join(AXES)}, got '{axis}'")
    if up[1] == front[1]:
        raise ConfigError(
            f"system.guide_shape_up ('{up}') and system.guide_shape_front ('{front}') must be "
            "orthogonal"
        )
    import trimesh

    # process=False: every vertex of the file counts in the centre, as when reading it raw
    loaded = trimesh.load(path, force="mesh", process=False)
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise UserError(f"system.guide_shape: {path} holds no triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    vertices = vertices - vertices.mean(axis=0)
    vertices = vertices / np.linalg.norm(vertices, axis=1).max() * scale
    x_axis, z_axis = np.array(AXES[front], float), np.array(AXES[up], float)
    rotation = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis])  # rows: new x, y, z
    return (
        torch.as_tensor(vertices @ rotation.T, dtype=torch.float32),
        torch.as_tensor(np.asarray(loaded.faces), dtype=torch.long),
    )


class SketchShapeLoss(nn.Module):
    """Cross-entropy between the field's occupancy ``1 - exp(-delta * density)`` at sample points
    and the guide mesh's inside indicator, summed over the points and weighted by
    ``1 - exp(-d^2 / (2 sigma^2))`` of their distance ``d`` to the mesh
    (``sigma = proximal_surface``; 0 weights every point 1).

    As in Latent-NeRF, the indicator is the cross-entropy's second argument, clamped to
    ``[1e-4, 1 - 1e-4]``: a point inside the mesh costs ``-(o log(1 - 1e-4) + (1 - o) log 1e-4)``,
    which falls as its occupancy ``o`` rises. Inside is decided by ray parity and distances are
    exact (``threestudio.utils.mesh_queries``); Latent-NeRF uses a winding number, which agrees
    on closed meshes and costs points x faces per step by brute force."""

    EPS = 1.0e-4

    def __init__(
        self,
        vertices: Float[Tensor, "Nv 3"],
        faces: Int[Tensor, "Nf 3"],
        proximal_surface: float = 0.3,
        delta: float = 0.2,
    ) -> None:
        super().__init__()
        self.mesh = MeshQueries(vertices, faces)
        self.proximal_surface = proximal_surface
        self.delta = delta

    @torch.no_grad()
    def targets(
        self, points: Float[Tensor, "N 3"]
    ) -> Tuple[Float[Tensor, "N"], Optional[Float[Tensor, "N"]]]:
        """The inside indicator (0/1) and the proximal weight of each point."""
        inside = self.mesh.inside(points).to(points.dtype)
        if self.proximal_surface <= 0:
            return inside, None
        distance = self.mesh.distance(points)
        weight = 1.0 - torch.exp(-(distance**2) / (2.0 * self.proximal_surface**2))
        return inside, weight

    def forward(
        self, points: Float[Tensor, "N 3"], density: Float[Tensor, "N 1"]
    ) -> Float[Tensor, ""]:
        inside, weight = self.targets(points)
        occupancy = (1.0 - torch.exp(-self.delta * density.reshape(-1))).clamp(0.0, 1.1)
        target = inside.clamp(self.EPS, 1.0 - self.EPS)
        ce = -(occupancy * torch.log(target) + (1.0 - occupancy) * torch.log(1.0 - target))
        if weight is not None:
            ce = ce * weight
        return ce.sum()


@threestudio.register("latentnerf-system")
class LatentNeRF(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        # Sketch-Shape's guide mesh (an OBJ or any mesh file trimesh reads); null: none
        guide_shape: Optional[str] = None
        # the RGB stage: renders are colours for the guidance's VAE, not latents
        refinement: bool = False
        # the guide mesh is centred on its vertex mean and scaled so its farthest vertex lies
        # this far from the origin
        guide_shape_scale: float = 0.7
        guide_shape_up: str = "+y"  # the guide mesh's up axis (becomes +z)
        guide_shape_front: str = "+z"  # the guide mesh's front axis (becomes +x)
        # sigma of the shape loss's weight 1 - exp(-d^2 / (2 sigma^2)) at distance d from the
        # guide mesh's surface; 0: every sample weighs 1
        guide_shape_proximal_surface: float = 0.3
        # the field's occupancy at a sample is 1 - exp(-guide_shape_delta * density)
        guide_shape_delta: float = 0.2

    cfg: Config

    def configure(self) -> None:
        super().configure()
        if self.cfg.guide_shape is not None:
            vertices, faces = load_guide_shape(
                self.cfg.guide_shape,
                self.cfg.guide_shape_scale,
                self.cfg.guide_shape_up,
                self.cfg.guide_shape_front,
            )
            self.shape_loss = SketchShapeLoss(
                vertices,
                faces,
                proximal_surface=self.cfg.guide_shape_proximal_surface,
                delta=self.cfg.guide_shape_delta,
            )

    # ---------- training ----------

    def renders_latents(self) -> bool:
        return not self.cfg.refinement

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        terms = super().regularizers(out)
        if (
            self.cfg.guide_shape is not None
            and self.lambda_of("shape", default=0) > 0
            and out["points"].shape[0] > 0
        ):
            terms["loss_shape"] = self.shape_loss(out["points"], out["density"])
        return terms

    # ---------- looking at latent renders ----------

    def on_test_start(self) -> None:
        # --test of the latent stage: the VAE decodes the turntable (the established system
        # loads its guidance whenever it is built); refinement renders RGB and needs none
        if not self.cfg.refinement and self.guidance is None and self.cfg.guidance_type:
            self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)

    def decode_for_viewing(self, comp_rgb: Float[Tensor, "B H W C"]) -> Float[Tensor, "B H W 3"]:
        """RGB of a render: itself in refinement; in the latent stage, the guidance's VAE decoding
        (latents first resized to the render's size over the VAE's downsampling factor, so the
        picture has the render's size), or the linear preview when no VAE is at hand."""
        if self.cfg.refinement:
            return comp_rgb
        if comp_rgb.shape[-1] != 4:
            raise ConfigError(
                "latentnerf-system renders 4 latent channels unless system.refinement is true: "
                f"got {comp_rgb.shape[-1]} (system.material.n_output_dims and "
                "system.background.n_output_dims must be 4)"
            )
        height, width = comp_rgb.shape[1:3]
        guidance = self.guidance
        if guidance is None or not hasattr(guidance, "decode_latents"):
            return latents_to_rgb_preview(comp_rgb)
        factor = getattr(guidance, "vae_scale_factor", 8)
        size = (max(1, height // factor), max(1, width // factor))
        latents = F.interpolate(
            comp_rgb.permute(0, 3, 1, 2), size, mode="bilinear", align_corners=False
        )
        image = guidance.decode_latents(latents)
        if image.shape[-2:] != (height, width):
            image = F.interpolate(image, (height, width), mode="bilinear", align_corners=False)
        return image.permute(0, 2, 3, 1)

    def eval_rgb(self, out: Dict[str, Any]) -> Tensor:
        return self.decode_for_viewing(out["comp_rgb"])[0]
