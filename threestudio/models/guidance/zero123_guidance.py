import os
from dataclasses import dataclass

import torch

import threestudio
from extern.zero123 import Zero123Pipeline, load_rgba_image
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    VAELatentsMixin,
    _load_pretrained,
    combine_cfg,
    ddim_inspection,
    ddim_scheduler,
    freeze,
    weights_dtype,
)
from threestudio.utils.base import BaseObject
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.paths import shipped_path
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor


class Zero123ConditioningMixin:
    """What every Zero-1-to-3 guidance shares: loading the pipeline folder, the conditioning
    image's CLIP embedding and VAE latent, the relative camera and the [cond; uncond] inputs.
    The class's Config has ``pretrained_model_name_or_path``, ``half_precision_weights``,
    ``cond_image_path`` and the ``cond_*`` camera of the conditioning image."""

    pipe: Zero123Pipeline

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def unet(self) -> Any:
        return self.pipe.unet

    def load_zero123(self) -> None:
        """``self.pipe`` (frozen, on the device), ``self.weights_dtype`` and the conditioning
        image's embeddings."""
        name = self.cfg.pretrained_model_name_or_path
        if name.endswith((".ckpt", ".safetensors")):
            raise ConfigError(
                f"pretrained_model_name_or_path={name} is an original checkpoint file; convert it "
                "with `python scripts/convert_zero123.py` into a folder (see docs/guidance.md)"
            )
        threestudio.info(f"Loading {type(self).__name__} ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        self.pipe = Zero123Pipeline.from_pretrained(
            name, torch_dtype=self.weights_dtype, loader=_load_pretrained
        )
        for part in (
            self.pipe.unet,
            self.pipe.vae,
            self.pipe.image_encoder,
            self.pipe.cc_projection,
        ):
            freeze(part)
        self.pipe.to(self.device)
        self.prepare_embeddings(self.cfg.cond_image_path)
        threestudio.info(f"Loaded {type(self).__name__}!")

    @torch.no_grad()
    def prepare_embeddings(self, image_path: str) -> None:
        """CLIP embedding and VAE latent of the conditioning image (computed once)."""
        image_path = shipped_path(image_path)
        if not os.path.isfile(image_path):
            raise UserError(
                f"conditioning image not found: {image_path} "
                "(set system.guidance.cond_image_path to an RGBA or RGB image)"
            )
        image = load_rgba_image(image_path, self.image_size).to(self.device)
        self.set_condition_image(image)

    @torch.no_grad()
    def set_condition_image(self, image: Float[Tensor, "1 3 H W"]) -> None:
        self.clip_embeds = self.pipe.encode_image_clip(image).float()
        self.concat_latents = self.pipe.encode_image_concat(image).float()

    def camera_embedding(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
    ) -> Float[Tensor, "B 4"]:
        """Zero-1-to-3's relative camera: [Δpolar (rad), sin Δazimuth, cos Δazimuth, Δdistance],
        polar = 90° - elevation."""
        d_polar = (90 - elevation) - (90 - self.cfg.cond_elevation_deg)
        d_azimuth = torch.deg2rad(azimuth - self.cfg.cond_azimuth_deg)
        return torch.stack(
            [
                torch.deg2rad(d_polar),
                torch.sin(d_azimuth),
                torch.cos(d_azimuth),
                camera_distances - self.cfg.cond_camera_distance,
            ],
            dim=-1,
        )

    def conditioning(self, elevation, azimuth, camera_distances) -> Dict[str, Tensor]:
        """[cond; uncond] cross-attention tokens and concat latents; uncond is all zeros."""
        camera = self.camera_embedding(elevation, azimuth, camera_distances).to(self.device)
        cond = self.pipe.cross_attention_states(self.clip_embeds, camera).float()
        concat = self.concat_latents.expand(camera.shape[0], -1, -1, -1)
        return {
            "cross_attention": torch.cat([cond, torch.zeros_like(cond)]),
            "concat": torch.cat([concat, torch.zeros_like(concat)]),
        }


@threestudio.register("zero123-guidance")
class Zero123Guidance(
    Zero123ConditioningMixin, DiffusionGuidanceMixin, VAELatentsMixin, BaseObject
):
    """SDS with Zero-1-to-3: the render is scored as a novel view of one conditioning image,
    given the camera relative to the conditioning view."""

    @dataclass
    class Config(BaseObject.Config, DiffusionGuidanceConfig):
        # a diffusers-layout folder or hub id; an original .ckpt is refused (convert it first)
        pretrained_model_name_or_path: str = "bennyguo/zero123-xl-diffusers"
        pretrained_config: Optional[str] = None  # original LDM yaml: not needed by this port
        vram_O: bool = True  # accepted for config compatibility
        half_precision_weights: bool = False
        guidance_scale: float = 5.0
        cond_image_path: str = "load/images/hamburger_rgba.png"  # RGBA (on white) or RGB
        # the camera of the conditioning image
        cond_elevation_deg: float = 0.0
        cond_azimuth_deg: float = 0.0  # see cond_elevation_deg
        cond_camera_distance: float = 1.2  # see cond_elevation_deg
        max_items_eval: int = 4  # batch items in the guidance_eval images

    cfg: Config

    def configure(self) -> None:
        self.load_zero123()
        self.scheduler = self.pipe.scheduler
        self.scheduler_ddim = ddim_scheduler(self.scheduler)
        self.setup_schedule(self.scheduler)

    def render_to_latents(
        self, rgb: Float[Tensor, "B H W C"], rgb_as_latents: bool
    ) -> Dict[str, Tensor]:
        encoded = super().render_to_latents(rgb, rgb_as_latents)
        if rgb_as_latents:
            # as established: a latent render in [0, 1] is mapped to [-1, 1]
            encoded["latents"] = encoded["latents"] * 2 - 1
        return encoded

    def __call__(
        self,
        rgb: Float[Tensor, "B H W C"],
        prompt_utils=None,  # unused: the condition is the image; image systems omit it
        elevation: Optional[Float[Tensor, "B"]] = None,
        azimuth: Optional[Float[Tensor, "B"]] = None,
        camera_distances: Optional[Float[Tensor, "B"]] = None,
        rgb_as_latents: bool = False,
        guidance_eval: bool = False,
        **kwargs,
    ) -> Dict[str, Any]:
        assert elevation is not None and azimuth is not None and camera_distances is not None, (
            "zero123 guidance needs elevation, azimuth and camera_distances (pass **batch)"
        )
        batch_size = rgb.shape[0]
        latents = self.render_to_latents(rgb, rgb_as_latents)["latents"]
        cond = self.conditioning(elevation, azimuth, camera_distances)

        def predict(x: Tensor, t: Tensor, cross_attention: Tensor) -> Tensor:
            return self.pipe.predict_noise(x, t, cross_attention, cond["concat"])

        t = self.sample_timesteps(batch_size)
        guided = self.guided_predictor(predict, cond["cross_attention"], None)
        # the SDS step: noise the latents, predict the noise with image-and-camera CFG, compare
        noise, latents_noisy, noise_pred = self.noise_and_predict(latents, t, guided)
        grad = self.sds_weight(t) * (noise_pred - noise)

        out = self.sds_loss(latents, grad)
        out.update(self.step_summary(t))
        if guidance_eval:

            def predict_guided(x: Tensor, t_i: Tensor, b: int) -> Tensor:
                rows = [b, batch_size + b]
                pred = self.pipe.predict_noise(
                    torch.cat([x, x]),
                    torch.cat([t_i, t_i]),
                    cond["cross_attention"][rows],
                    cond["concat"][rows],
                )
                pred_cond, pred_uncond = pred.chunk(2)
                return combine_cfg(
                    pred_cond, pred_uncond, self.cfg.guidance_scale, self.cfg.cfg_form
                )

            out["eval"] = ddim_inspection(
                self.scheduler_ddim,
                predict_guided,
                self.decode_latents,
                latents_noisy,
                noise_pred,
                t,
                max_items=self.cfg.max_items_eval,
            )
        return out
