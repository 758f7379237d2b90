"""Zero-1-to-3 guidance alone (``zero123-simple-system``): a NeRF fitted to one image only
through the novel views the guidance scores.

Unlike ``zero123-system`` there is no reference-view loss: each step renders the
``random_camera`` sub-batch of the ``single-image-datamodule`` and asks the guidance
(``zero123-unified-guidance``: SDS or VSD) for its losses; the conditioning image enters only
through the guidance. The regularisers are DreamFusion's (orientation, sparsity, opacity) and a
2D smoothness of the rendered normal map (``lambda_normal_smoothness_2d``). Every 50 steps the
render is saved beside the guidance's one-step and multistep x0 estimates when it returns them
(``it<step>-train-t<timestep>.png``)."""

from dataclasses import dataclass

import torch.nn.functional as F

import threestudio
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.errors import ConfigError
from threestudio.utils.loss import normal_smoothness_2d
from threestudio.utils.typing import Any, Dict, Tensor

TRAIN_IMAGE_EVERY = 50  # steps between the saved training panels, as established


@threestudio.register("zero123-simple-system")
class Zero123Simple(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        pass

    cfg: Config

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        terms = super().regularizers(out)
        if self.lambda_of("normal_smoothness_2d", default=0) > 0:
            if "comp_normal" not in out:
                raise ConfigError(
                    "system.loss.lambda_normal_smoothness_2d > 0 needs "
                    "system.renderer.return_comp_normal=true"
                )
            terms["loss_normal_smoothness_2d"] = normal_smoothness_2d(out["comp_normal"])
        return terms

    def save_train_images(self, rgb: Tensor, guidance_out: Dict[str, Any]) -> str:
        """The render (item 0) and the guidance's x0 estimates that it returned (resized to
        the render's size)."""
        images = [rgb[0]]
        for key in ("rgb_1step_orig", "rgb_multistep_orig"):
            if key in guidance_out:
                estimate = guidance_out[key][:1].detach().permute(0, 3, 1, 2).float()
                estimate = F.interpolate(estimate, rgb.shape[1:3], mode="bilinear")
                images.append(estimate[0].permute(1, 2, 0))
        return self.save_image_grid(
            f"it{self.true_global_step}-train-t{int(guidance_out['timestep'])}.png",
            [{"type": "rgb", "img": img, "kwargs": {"data_format": "HWC"}} for img in images],
        )

    def training_step(self, batch, batch_idx):
        batch = batch["random_camera"]
        out = self(batch)
        guidance_out = self.guidance(
            self.guidance_input(out, batch), self.prompt_utils, **batch, rgb_as_latents=False
        )
        terms = self.guidance_terms(guidance_out)
        terms.update(self.regularizers(out))
        if self.true_global_step % TRAIN_IMAGE_EVERY == 0:
            self.save_train_images(out["comp_rgb"].detach(), guidance_out)
        return {"loss": self.weighted_loss(terms)}
