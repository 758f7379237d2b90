"""The unified guidance's step (SDS or VSD, chosen by ``guidance_type``) with Zero-1-to-3.

The render is scored as a novel view of one conditioning image: the pretrained model sees the
noisy latent beside the conditioning image's VAE latent and cross-attends to one token, the
CLIP image embedding joined with the camera relative to the conditioning view
(``Zero123ConditioningMixin``, shared with ``zero123-guidance``); its unconditional half has a
zero token and a zero image latent. ``sds`` compares the guided noise with the added noise;
``vsd`` with the noise of phi, a camera-conditioned LoRA copy of the model fitted to the renders
(``UnifiedGuidanceMixin``, shared with ``stable-diffusion-unified-guidance``), which sees the
same image token and image latent in both halves of its camera CFG.

The conventions are the established unified guidance's: one timestep per batch, the diffusers
CFG form ``uncond + s (cond - uncond)``, the loss named ``loss_sd`` (``loss_train_phi`` for VSD)
and its weightings (``dreamfusion``: ``1 - sqrt(alpha_bar)``). A render given as latents
(``rgb_as_latents``) is taken as it is (not mapped from [0, 1] as ``zero123-guidance`` does).
"""

from dataclasses import dataclass

import torch

import threestudio
from extern.zero123 import Zero123Pipeline
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    VAELatentsMixin,
    _load_pretrained,
    ddim_inspection,
    ddim_scheduler,
    freeze,
    phi_denoising_loss,
)
from threestudio.models.guidance.stable_diffusion_unified_guidance import (
    UnifiedGuidanceConfig,
    UnifiedGuidanceMixin,
    _FrozenParts,
)
from threestudio.models.guidance.zero123_guidance import Zero123ConditioningMixin
from threestudio.utils.base import BaseModule
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor


@threestudio.register("zero123-unified-guidance")
class Zero123UnifiedGuidance(
    UnifiedGuidanceMixin,
    Zero123ConditioningMixin,
    DiffusionGuidanceMixin,
    VAELatentsMixin,
    BaseModule,
):
    """SDS or VSD with Zero-1-to-3 (camera-conditioned on the view relative to one image).

    With VSD and ``vsd_use_camera_condition``, phi's camera embedding is registered as the
    submodule ``camera_embedding`` (the established state-dict name) while the attribute of
    that name stays the relative-camera method of ``Zero123ConditioningMixin``; phi reaches
    its embedding as the UNet's ``class_embedding``."""

    @dataclass
    class Config(BaseModule.Config, DiffusionGuidanceConfig, UnifiedGuidanceConfig):
        # a Zero-1-to-3 folder or hub id (diffusers layout); an original .ckpt is refused
        # (convert it with scripts/convert_zero123.py)
        pretrained_model_name_or_path: str = "bennyguo/zero123-diffusers"
        guidance_scale: float = 5.0  # CFG over the image and camera: uncond + s (cond - uncond)
        # w(t): dreamfusion = 1 - sqrt(alpha_bar) | fantasia3d = alpha_bar^(1/4) (1 - sqrt(alpha_bar))
        # | sds = 1 - alpha_bar | uniform = 1
        weighting_strategy: str = "dreamfusion"
        half_precision_weights: bool = True  # fp16 weights on CUDA; the CPU keeps float32
        cond_image_path: str = ""  # the conditioning image (RGBA on white, or RGB)
        # the camera of the conditioning image
        cond_elevation_deg: float = 0.0
        cond_azimuth_deg: float = 0.0  # see cond_elevation_deg
        cond_camera_distance: float = 1.2  # see cond_elevation_deg
        # VSD: phi starts from this model (null: the pretrained UNet itself, LoRA on top)
        vsd_phi_model_name_or_path: Optional[str] = "bennyguo/zero123-diffusers"

    cfg: Config

    def configure(self) -> None:
        self.check_guidance_type()
        self.load_zero123()
        self.scheduler = self.pipe.scheduler
        self.scheduler_ddim = ddim_scheduler(self.scheduler)

        def load_phi(name: str):
            pipe = Zero123Pipeline.from_pretrained(
                name, torch_dtype=self.weights_dtype, loader=_load_pretrained
            )
            return freeze(pipe.unet), pipe.scheduler

        unet_phi = self.build_phi(self.pipe.unet, load_phi)
        if unet_phi is not None:
            unet_phi.to(self.device)
        self.frozen = _FrozenParts(unet=self.pipe.unet, vae=self.pipe.vae, unet_phi=unet_phi)
        self.setup_schedule(self.scheduler)

    # ---------- the two denoisers ----------

    def with_image_latents(self, x: Tensor, uncond_half: bool) -> Tensor:
        """``x`` beside the conditioning image's latent (8 channels); with ``uncond_half`` the
        second half of the batch gets a zero latent instead (the unconditional branch)."""
        concat = self.concat_latents.expand(x.shape[0], -1, -1, -1).to(x)
        if uncond_half:
            half = x.shape[0] // 2
            concat = torch.cat([concat[:half], torch.zeros_like(concat[half:])])
        return torch.cat([x, concat], dim=1)

    def forward_pretrained(self, x: Tensor, t: Tensor, cross_attention: Tensor) -> Tensor:
        """The pretrained model's noise on a [cond; uncond] stacked batch, raw (as the model
        predicts it)."""
        with self.pretrained_unet() as unet:
            return self.run_unet(unet, self.with_image_latents(x, True), t, cross_attention)

    def eps_pretrained(self, x: Tensor, t: Tensor, cross_attention: Tensor) -> Tensor:
        return self.to_epsilon(self.forward_pretrained(x, t, cross_attention), x, t, self.scheduler)

    def forward_phi(
        self, x: Tensor, t: Tensor, cross_attention: Tensor, camera: Optional[Tensor]
    ) -> Tensor:
        """phi's raw prediction: the image token and image latent in every row."""
        return self.run_unet(
            self.frozen.unet_phi,
            self.with_image_latents(x, False),
            t,
            cross_attention,
            class_labels=None if camera is None else camera.float(),
        )

    # ---------- the step ----------

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
            "zero123-unified-guidance needs elevation, azimuth and camera_distances (pass **batch)"
        )
        batch_size = rgb.shape[0]
        latents = self.render_to_latents(rgb, rgb_as_latents)["latents"]
        cond = self.conditioning(elevation, azimuth, camera_distances)
        # one timestep for the whole batch, as established
        t = self.sample_timesteps(1).repeat(batch_size)
        guided = self.guided_predictor(self.eps_pretrained, cond["cross_attention"], None)
        noise, latents_noisy, eps_pretrain = self.noise_and_predict(latents, t, guided)
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        latents_1step_orig = (latents_noisy - (1 - alpha_bar) ** 0.5 * eps_pretrain) / (
            alpha_bar**0.5
        )

        loss_train_phi = None
        if self.is_vsd:
            token = cond["cross_attention"][:batch_size]
            batch = dict(
                kwargs, elevation=elevation, azimuth=azimuth, camera_distances=camera_distances
            )
            camera = self.phi_camera(batch, latents)
            eps_phi = self.phi_noise(latents_noisy, t, token, camera)
            loss_train_phi = phi_denoising_loss(
                self.forward_phi,
                self.scheduler_phi,
                latents,
                token,
                camera,
                self.cfg.vsd_lora_n_timestamp_samples,
                self.cfg.vsd_lora_cfg_training,
            )
        else:
            eps_phi = noise

        out = self.sds_loss(latents, self.sds_weight(t) * (eps_pretrain - eps_phi), "loss_sd")
        out.update(self.step_summary(t))
        if loss_train_phi is not None:
            out["loss_train_phi"] = loss_train_phi
        if self.cfg.return_rgb_1step_orig:
            with torch.no_grad():
                out["rgb_1step_orig"] = self.decode_latents(latents_1step_orig).permute(0, 2, 3, 1)
        if self.cfg.return_rgb_multistep_orig:
            latents_multistep = self.denoise_multistep(
                latents_noisy, int(t[0]), self.multistep_predictor(cond["cross_attention"])
            )
            with torch.no_grad():
                rgb_multistep = self.decode_latents(latents_multistep)
            out["latents_multistep_orig"] = latents_multistep
            out["rgb_multistep_orig"] = rgb_multistep.permute(0, 2, 3, 1)
        if guidance_eval:
            out["eval"] = ddim_inspection(
                self.scheduler_ddim,
                self.item_guided_predictor(self.eps_pretrained, cond["cross_attention"], None),
                self.decode_latents,
                latents_noisy,
                eps_pretrain,
                t,
                max_items=self.cfg.max_items_eval,
            )
        return out

    def multistep_predictor(self, cross_attention: Float[Tensor, "N 1 D"]):
        """The raw guided prediction for ``denoise_multistep``: CFG when the scale is above 1,
        else the conditional prediction alone (the established pipeline's rule)."""
        scale = self.cfg.guidance_scale

        def predict(x_in: Tensor, t_batch: Tensor) -> Tensor:
            two = torch.cat([t_batch, t_batch])
            pred_cond, pred_uncond = self.forward_pretrained(
                torch.cat([x_in, x_in]), two, cross_attention
            ).chunk(2)
            if scale <= 1.0:
                return pred_cond
            return pred_uncond + scale * (pred_cond - pred_uncond)

        return predict
