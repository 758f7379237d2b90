"""ProlificDreamer (Wang et al. 2023): Variational Score Distillation in three stages.

``stage: coarse`` distils a NeRF (or, with an SDF geometry, a NeuS field) with VSD: the
``stable-diffusion-vsd-guidance`` scores each render against a LoRA copy of the UNet that is
fitted to the same renders, conditioned on the camera, in the same step (its ``loss_lora`` is
weighted by ``lambda_lora`` and its parameters are optimised with the scene's). The
regularisers are DreamFusion's plus the eikonal term for SDF fields (TextMesh's).
``stage: geometry`` converts the coarse field into a DMTet surface
(``system.geometry_convert_from``) and refines it from its normal map alone, rendered without
colour and scored by SDS, held by normal-consistency and Laplacian terms. ``stage: texture``
keeps that surface fixed (``tetrahedra-sdf-grid`` with ``fix_geometry``) and distils a texture
field on it with VSD. Validation, the test video and export are the bases'."""

from dataclasses import dataclass

import threestudio
from threestudio.systems.textmesh import TextMesh
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, List, Tensor

STAGES = ("coarse", "geometry", "texture")


@threestudio.register("prolificdreamer-system")
class ProlificDreamer(TextMesh):
    @dataclass
    class Config(TextMesh.Config):
        # coarse (volume + VSD) | geometry (DMTet surface from its normal map) | texture (a
        # texture field on the fixed surface)
        stage: str = "coarse"
        # also save, beside each validation image, a sample of the pretrained and of the LoRA
        # model (needs a guidance with sample() and sample_lora())
        visualize_samples: bool = False

    cfg: Config

    def configure(self) -> None:
        if self.cfg.stage not in STAGES:
            raise ConfigError(
                f"system.stage '{self.cfg.stage}' is unknown; use one of {', '.join(STAGES)}"
            )
        super().configure()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.cfg.visualize_samples and not (
            hasattr(self.guidance, "sample") and hasattr(self.guidance, "sample_lora")
        ):
            # said before training, not at the first validation
            raise ConfigError(
                f"system.visualize_samples: {self.cfg.guidance_type} cannot draw samples "
                "(set visualize_samples=false)"
            )
        if (
            self.cfg.stage != "coarse"
            and not self.cfg.geometry_convert_from
            and not self.resumed
            and self.cfg.weights is None
        ):
            threestudio.warn(
                f"system.stage is {self.cfg.stage} but system.geometry_convert_from is not set: "
                "the stage starts from an empty tet grid (pass the previous stage's "
                "ckpts/last.ckpt)"
            )

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        # the geometry stage never looks at colour
        if self.cfg.stage == "geometry":
            return self.renderer(**batch, render_rgb=False)
        return self.renderer(**batch)

    def guidance_input(self, out: Dict[str, Any], batch: Dict[str, Any]) -> Tensor:
        """The geometry stage scores the normal map (in [0, 1]) as if it were an image."""
        if self.cfg.stage == "geometry":
            return out["comp_normal"]
        return super().guidance_input(out, batch)

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        if self.cfg.stage == "coarse":
            return super().regularizers(out)
        if self.cfg.stage == "texture":
            return {}
        if "mesh" not in out:
            raise ConfigError(
                f"system.stage is geometry but system.renderer_type={self.cfg.renderer_type} "
                "renders no mesh (use nvdiff-rasterizer with a tetrahedra-sdf-grid geometry)"
            )
        terms = {}
        if self.lambda_of("normal_consistency", default=0) > 0:
            terms["loss_normal_consistency"] = out["mesh"].normal_consistency()
        if self.lambda_of("laplacian_smoothness", default=0) > 0:
            terms["loss_laplacian_smoothness"] = out["mesh"].laplacian()
        return terms

    def eval_image_items(self, out: Dict[str, Any], batch: Dict[str, Any]) -> List[Dict[str, Any]]:
        if "comp_rgb" in out:
            return super().eval_image_items(out, batch)
        # the geometry stage renders no colour: normals and silhouette only
        return super().eval_image_items({**out, "comp_rgb": out["comp_normal"]}, batch)[1:]

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        if self.cfg.visualize_samples:
            index = int(batch["index"][0])
            self.save_image_grid(
                f"it{self.true_global_step}-{index}-sample.png",
                [
                    {
                        "type": "rgb",
                        "img": self.guidance.sample(
                            self.prompt_utils, **batch, seed=self.global_step
                        )[0],
                        "kwargs": {"data_format": "HWC"},
                    },
                    {
                        "type": "rgb",
                        "img": self.guidance.sample_lora(self.prompt_utils, **batch)[0],
                        "kwargs": {"data_format": "HWC"},
                    },
                ],
            )
