from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    HiFAConfig,
    SpeedupConfig,
    TokenMergingConfig,
    VAELatentsMixin,
    apply_token_merging,
    ddim_inspection,
    ddim_scheduler,
    load_scheduler,
    load_unet_and_vae,
    place_models,
    weights_dtype,
)
from threestudio.utils.base import BaseObject
from threestudio.utils.typing import Any, Dict, Float, Tensor


@threestudio.register("stable-diffusion-guidance")
class StableDiffusionGuidance(DiffusionGuidanceMixin, VAELatentsMixin, BaseObject):
    """Score Distillation Sampling (DreamFusion) with Stable Diffusion, plus the SJC variant
    (Perturb-and-Average Scoring) and HiFA's image-space loss."""

    @dataclass
    class Config(
        BaseObject.Config, DiffusionGuidanceConfig, HiFAConfig, TokenMergingConfig, SpeedupConfig
    ):
        # the established SDS/SJC form cond + s (cond - uncond), for which 100 was tuned
        cfg_form: str = "cond"
        # Score Jacobian Chaining (PAAS) instead of SDS (still reported as loss_sds)
        use_sjc: bool = False
        var_red: bool = True  # SJC: subtract the clean latents instead of the noisy ones
        max_items_eval: int = 4  # batch items in the guidance_eval images

    cfg: Config

    def configure(self) -> None:
        threestudio.info("Loading Stable Diffusion ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name = self.cfg.pretrained_model_name_or_path
        self.unet, self.vae = load_unet_and_vae(name, self.weights_dtype)
        self.scheduler = load_scheduler(name)
        self.scheduler_ddim = ddim_scheduler(self.scheduler)
        apply_token_merging(self.cfg, self.unet)
        place_models(self.cfg, self.device, [self.unet], [self.vae])
        self.setup_schedule(self.scheduler)
        # SJC's noise scale sigma_t = sqrt((1 - alpha_bar) / alpha_bar)
        self.us = torch.sqrt((1 - self.alphas) / self.alphas)
        threestudio.info("Loaded Stable Diffusion!")

    def forward_unet(self, latents: Tensor, t: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        return self.run_unet(self.unet, latents, t, encoder_hidden_states)

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
        batch_size = rgb.shape[0]
        encoded = self.render_to_latents(rgb, rgb_as_latents)
        latents = encoded["latents"]
        text_embeddings, neg_weights = self.text_embeddings(
            prompt_utils, elevation, azimuth, camera_distances
        )
        # with sqrt_anneal min_step == max_step: HiFA's one timestep, decreasing over training
        t = self.sample_timesteps(batch_size)
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        guided = self.guided_predictor(self.forward_unet, text_embeddings, neg_weights)

        # the SDS step: noise the latents, predict the noise with CFG, compare
        if self.cfg.use_sjc:
            with torch.no_grad():
                # SJC works with the variance-exploding form z = y + sigma * eps
                noise = torch.randn_like(latents)
                sigma = self.us[t].view(-1, 1, 1, 1)
                latents_noisy = latents + sigma * noise
                noise_pred = guided(latents_noisy / torch.sqrt(1 + sigma**2), t)
                denoised = latents_noisy - sigma * noise_pred
                reference = latents if self.cfg.var_red else latents_noisy
                grad = -(denoised - reference) / sigma
        else:
            noise, latents_noisy, noise_pred = self.noise_and_predict(latents, t, guided)
            grad = self.sds_weight(t) * (noise_pred - noise)

        # SJC also reports as loss_sds, so published configs weight it with lambda_sds
        out = self.sds_loss(latents, grad)
        if self.cfg.use_img_loss and encoded["image"] is not None and not self.cfg.use_sjc:
            # HiFA: decode the one-step x0 estimate and pull the render toward it
            image = encoded["image"]
            with torch.no_grad():
                latents_x0 = (latents_noisy - (1 - alpha_bar) ** 0.5 * noise_pred) / (
                    alpha_bar**0.5
                )
                image_x0 = self.decode_latents(latents_x0)
                grad_img = (
                    self.sds_weight(t)
                    * (image - image_x0)
                    * alpha_bar**0.5
                    / (1 - alpha_bar) ** 0.5
                )
            out["loss_sds_img"] = self.sds_loss(image, grad_img)["loss_sds"]
        out.update(self.step_summary(t))

        if guidance_eval:
            out["eval"] = self.guidance_eval(
                latents_noisy, noise_pred, t, text_embeddings, neg_weights
            )
        return out

    def guidance_eval(self, latents_noisy, noise_pred, t, text_embeddings, neg_weights):
        if self.cfg.use_sjc:  # inspection runs in the DDPM parametrisation
            sigma = self.us[t].view(-1, 1, 1, 1)
            latents_noisy = latents_noisy / torch.sqrt(1 + sigma**2)
        return ddim_inspection(
            self.scheduler_ddim,
            self.item_guided_predictor(self.forward_unet, text_embeddings, neg_weights),
            self.decode_latents,
            latents_noisy,
            noise_pred,
            t,
            max_items=self.cfg.max_items_eval,
        )
