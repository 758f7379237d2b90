from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    ImageEditMixin,
    SpeedupConfig,
    VAELatentsMixin,
    ddim_scheduler,
    load_scheduler,
    load_unet_and_vae,
    place_models,
    weights_dtype,
)
from threestudio.utils.base import BaseObject
from threestudio.utils.typing import Float, Optional, Tensor


@threestudio.register("stable-diffusion-instructpix2pix-guidance")
class InstructPix2PixGuidance(ImageEditMixin, DiffusionGuidanceMixin, VAELatentsMixin, BaseObject):
    """InstructPix2Pix editing of renders (Instruct-NeRF2NeRF): either edited images to fit
    (``edit_images``, the default) or an SDS loss toward the edit (``use_sds``).

    The UNet sees the noisy latent concatenated with the (unscaled) VAE latent of the original
    view; guidance mixes text and image conditions:
    ``ε_u + s_text (ε_text+img − ε_img) + s_img (ε_img − ε_u)``."""

    @dataclass
    class Config(BaseObject.Config, DiffusionGuidanceConfig, SpeedupConfig):
        pretrained_model_name_or_path: str = "timbrooks/instruct-pix2pix"
        ddim_scheduler_name_or_path: Optional[str] = None  # None: from the model's scheduler
        cache_dir: Optional[str] = None  # passed to from_pretrained
        guidance_scale: float = 7.5  # text guidance
        condition_scale: float = 1.5  # image guidance
        fixed_size: int = -1  # > 0: resize renders to this square size; else keep (multiple of 8)
        diffusion_steps: int = 20  # DDIM steps of the full range (those at or below t run)
        use_sds: bool = False  # return loss_sds instead of edit_images

    cfg: Config

    def configure(self) -> None:
        threestudio.info("Loading InstructPix2Pix ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name = self.cfg.pretrained_model_name_or_path
        self.unet, self.vae = load_unet_and_vae(name, self.weights_dtype, self.cfg.cache_dir)
        place_models(self.cfg, self.device, [self.unet], [self.vae])
        self.scheduler = load_scheduler(name, self.cfg.cache_dir)
        self.scheduler_ddim = ddim_scheduler(
            self.scheduler, self.cfg.ddim_scheduler_name_or_path, self.cfg.cache_dir
        )
        self.setup_schedule(self.scheduler)
        threestudio.info("Loaded InstructPix2Pix!")

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def predict_noise(
        self,
        latents: Tensor,
        t: Tensor,
        text_embeddings: Float[Tensor, "BB N Nf"],
        cond_latents: Float[Tensor, "B 4 h w"],
    ) -> Tensor:
        """Guided noise; the three branches are (text + image), (image only), (neither)."""
        batch_size = latents.shape[0]
        cond, uncond = text_embeddings[:batch_size], text_embeddings[batch_size:]
        x = torch.cat([latents] * 3)
        image = torch.cat([cond_latents, cond_latents, torch.zeros_like(cond_latents)])
        embeddings = torch.cat([cond, uncond, uncond])
        pred = self.unet(
            torch.cat([x, image], dim=1).to(self.weights_dtype),
            torch.cat([t] * 3).to(self.weights_dtype),
            encoder_hidden_states=embeddings.to(self.weights_dtype),
        ).sample.to(latents.dtype)
        pred_text, pred_image, pred_uncond = pred.chunk(3)
        return (
            pred_uncond
            + self.cfg.guidance_scale * (pred_text - pred_image)
            + self.cfg.condition_scale * (pred_image - pred_uncond)
        )

    def edit_predictor(self, cond_BCHW, prompt_utils, cameras, latents):
        with torch.no_grad():
            cond_latents = self.vae.encode((cond_BCHW * 2 - 1).to(self.vae.dtype)).latent_dist
            cond_latents = cond_latents.mode().to(latents.dtype)
        text_embeddings = prompt_utils.get_text_embeddings(*cameras, view_dependent_prompting=False)

        def guided(x: Tensor, t: Tensor) -> Tensor:
            return self.predict_noise(x, t, text_embeddings, cond_latents)

        return guided
