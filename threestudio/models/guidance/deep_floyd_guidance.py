from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    SpeedupConfig,
    _load_pretrained,
    ddim_inspection,
    ddim_scheduler,
    freeze,
    load_scheduler,
    place_models,
    weights_dtype,
)
from threestudio.utils.base import BaseObject
from threestudio.utils.errors import MissingModelError
from threestudio.utils.typing import Any, Dict, Float, Tensor


@threestudio.register("deep-floyd-guidance")
class DeepFloydGuidance(DiffusionGuidanceMixin, BaseObject):
    """SDS in pixel space with DeepFloyd IF stage I (64x64); text embeddings come from T5
    through the prompt processor."""

    @dataclass
    class Config(BaseObject.Config, DiffusionGuidanceConfig, SpeedupConfig):
        pretrained_model_name_or_path: str = "DeepFloyd/IF-I-XL-v1.0"
        guidance_scale: float = 20.0
        cfg_form: str = "cond"  # the established IF form, for which guidance_scale 20 was tuned
        max_items_eval: int = 4  # batch items in the guidance_eval images

    cfg: Config

    def configure(self) -> None:
        threestudio.info("Loading DeepFloyd IF ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name = self.cfg.pretrained_model_name_or_path
        kwargs = {"torch_dtype": self.weights_dtype, "subfolder": "unet"}
        unet = None
        if self.weights_dtype == torch.float16:
            try:  # the hub folder ships smaller fp16 files; a converted folder may not
                unet = _load_pretrained(UNet2DConditionModel, name, variant="fp16", **kwargs)
            except (MissingModelError, ValueError):
                unet = None
        if unet is None:
            unet = _load_pretrained(UNet2DConditionModel, name, **kwargs)
        self.unet = freeze(unet)
        place_models(self.cfg, self.device, [self.unet], [])
        self.scheduler = load_scheduler(name)
        self.scheduler_ddim = ddim_scheduler(self.scheduler)
        self.setup_schedule(self.scheduler)
        threestudio.info("Loaded DeepFloyd IF!")

    @property
    def image_size(self) -> int:
        size = self.unet.config.sample_size
        return size[0] if isinstance(size, (list, tuple)) else int(size)

    def forward_unet(self, images: Tensor, t: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        pred = self.run_unet(self.unet, images, t, encoder_hidden_states)
        # IF predicts noise and a learned variance (2 x 3 channels); SDS uses the noise only. A
        # model with a fixed variance (the bundled tiny-shapes) predicts the noise alone.
        return pred[:, : images.shape[1]]

    def __call__(
        self,
        rgb: Float[Tensor, "B H W C"],
        prompt_utils,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        rgb_as_latents: bool = False,
        guidance_eval: bool = False,
        **kwargs,
    ) -> Dict[str, Any]:
        assert not rgb_as_latents, "DeepFloyd IF works in pixel space: rgb_as_latents=False"
        batch_size = rgb.shape[0]
        size = (self.image_size, self.image_size)
        images = F.interpolate(rgb.permute(0, 3, 1, 2), size, mode="bilinear", align_corners=False)
        images = images * 2.0 - 1.0  # IF works on [-1, 1] pixels
        text_embeddings, neg_weights = self.text_embeddings(
            prompt_utils, elevation, azimuth, camera_distances
        )
        t = self.sample_timesteps(batch_size)
        guided = self.guided_predictor(self.forward_unet, text_embeddings, neg_weights)

        # the SDS step: noise the image, predict the noise with CFG, compare
        noise, images_noisy, noise_pred = self.noise_and_predict(images, t, guided)
        grad = self.sds_weight(t) * (noise_pred - noise)

        out = self.sds_loss(images, grad)
        out.update(self.step_summary(t))
        if guidance_eval:
            out["eval"] = ddim_inspection(
                self.scheduler_ddim,
                self.item_guided_predictor(self.forward_unet, text_embeddings, neg_weights),
                lambda x: (x * 0.5 + 0.5).clamp(0, 1),
                images_noisy,
                noise_pred,
                t,
                max_items=self.cfg.max_items_eval,
            )
        return out
