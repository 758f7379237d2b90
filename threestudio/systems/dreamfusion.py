"""DreamFusion (Poole et al. 2022): score distillation of a text-to-image model into a NeRF.

A training step renders a random-camera batch, asks the guidance for its ``loss_*`` terms and
adds DreamFusion's regularisers; the base class weights every term by ``system.loss.lambda_*``
and owns validation, the test video and export."""

from dataclasses import dataclass

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.errors import ConfigError
from threestudio.utils.loss import binary_entropy
from threestudio.utils.ops import dot
from threestudio.utils.typing import Any, Dict, Tensor


@threestudio.register("dreamfusion-system")
class DreamFusion(BaseLift3DSystem):
    @dataclass
    class Config(BaseLift3DSystem.Config):
        pass

    cfg: Config

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        terms = {}
        if self.lambda_of("orient", default=0) > 0:
            if "normal" not in out:
                raise ConfigError(
                    "system.loss.lambda_orient > 0 needs normals: set system.geometry.normal_type "
                    "and a material that uses them, or lambda_orient=0"
                )
            # normals should not face away from the camera, weighted by each sample's
            # contribution to the image (Ref-NeRF's orientation loss)
            facing_away = dot(out["normal"], out["t_dirs"]).clamp_min(0.0) ** 2
            n_rays = (out["opacity"] > 0).sum().clamp(min=1)
            terms["loss_orient"] = (out["weights"].detach() * facing_away).sum() / n_rays
        if self.lambda_of("sparsity", default=0) > 0:
            terms["loss_sparsity"] = (out["opacity"] ** 2 + 0.01).sqrt().mean()
        if self.lambda_of("opaque", default=0) > 0:
            terms["loss_opaque"] = binary_entropy(out["opacity"], eps=1.0e-3)
        if self.lambda_of("z_variance", default=0) > 0:
            # HiFA: a thin surface along each ray, where the ray is mostly opaque
            mask = out["opacity"] > 0.5
            terms["loss_z_variance"] = (
                out["z_variance"][mask].mean() if mask.any() else out["z_variance"].sum() * 0.0
            )
        return terms

    def guidance_input(self, out: Dict[str, Any], batch: Dict[str, Any]) -> Tensor:
        """The image the guidance scores: the render itself (efficient-dreamfusion-system
        spreads a sparse render over the full image here)."""
        return out["comp_rgb"]

    def renders_latents(self) -> bool:
        """Whether that image is already the diffusion model's latent (Latent-NeRF), which the
        guidance then takes without encoding it."""
        return False

    def training_step(self, batch, batch_idx):
        out = self(batch)
        guidance_out = self.guidance(
            self.guidance_input(out, batch),
            self.prompt_utils,
            **batch,
            rgb_as_latents=self.renders_latents(),
        )
        terms = self.guidance_terms(guidance_out)
        terms.update(self.regularizers(out))
        return {"loss": self.weighted_loss(terms)}
