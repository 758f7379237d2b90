from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    SpeedupConfig,
    VAELatentsMixin,
    _load_pretrained,
    ddim_edit,
    freeze,
    load_ddpm_and_ddim,
    place_models,
    resize_image_pair,
    weights_dtype,
)
from threestudio.utils.base import BaseObject
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor


@threestudio.register("stable-diffusion-instructpix2pix-guidance")
class InstructPix2PixGuidance(DiffusionGuidanceMixin, VAELatentsMixin, BaseObject):
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
        load = {"torch_dtype": self.weights_dtype, "cache_dir": self.cfg.cache_dir}
        self.unet = freeze(_load_pretrained(UNet2DConditionModel, name, subfolder="unet", **load))
        self.vae = freeze(_load_pretrained(AutoencoderKL, name, subfolder="vae", **load))
        place_models(self.cfg, self.device, [self.unet], [self.vae])
        self.scheduler, self.scheduler_ddim = load_ddpm_and_ddim(self.cfg, name)
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

    def __call__(
        self,
        rgb: Float[Tensor, "B H W C"],
        cond_rgb: Float[Tensor, "B H W C"],
        prompt_utils,
        elevation: Optional[Float[Tensor, "B"]] = None,
        azimuth: Optional[Float[Tensor, "B"]] = None,
        camera_distances: Optional[Float[Tensor, "B"]] = None,
        **kwargs,
    ) -> Dict[str, Any]:
        batch_size, height, width, _ = rgb.shape
        rgb_BCHW, cond_BCHW = resize_image_pair(rgb, cond_rgb, self.cfg.fixed_size)
        with torch.set_grad_enabled(self.cfg.use_sds and torch.is_grad_enabled()):
            latents = self.encode_images(rgb_BCHW)
        with torch.no_grad():
            cond_latents = self.vae.encode((cond_BCHW * 2 - 1).to(self.vae.dtype)).latent_dist
            cond_latents = cond_latents.mode().to(latents.dtype)
        zeros = torch.zeros(batch_size, device=rgb.device)
        text_embeddings = prompt_utils.get_text_embeddings(
            zeros if elevation is None else elevation,
            zeros if azimuth is None else azimuth,
            zeros if camera_distances is None else camera_distances,
            view_dependent_prompting=False,
        )
        t = self.sample_timesteps(batch_size)

        if self.cfg.use_sds:
            # the SDS step toward the edit
            with torch.no_grad():
                noise = torch.randn_like(latents)
                latents_noisy = self.scheduler.add_noise(latents, noise, t)
                noise_pred = self.predict_noise(latents_noisy, t, text_embeddings, cond_latents)
            grad = self.sds_weight(t) * (noise_pred - noise)
            out = self.sds_loss(latents, grad)
            out.update({"min_step": self.min_step, "max_step": self.max_step, "timesteps": t})
            return out

        # editing: noise to (about) t, then DDIM back to a clean edited image
        with torch.no_grad():
            edited = ddim_edit(
                self.scheduler_ddim,
                self.scheduler,
                latents.detach(),
                int(t.max()),
                self.cfg.diffusion_steps,
                lambda x, t_b: self.predict_noise(x, t_b, text_embeddings, cond_latents),
            )
            edit_images = self.decode_latents(edited)
        edit_images = F.interpolate(edit_images, (height, width), mode="bilinear")
        return {"edit_images": edit_images.permute(0, 2, 3, 1), "timesteps": t}
