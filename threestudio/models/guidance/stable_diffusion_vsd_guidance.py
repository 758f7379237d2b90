import copy
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    HiFAConfig,
    SpeedupConfig,
    TokenMergingConfig,
    VAELatentsMixin,
    _load_pretrained,
    add_camera_lora,
    apply_token_merging,
    camera_condition,
    freeze,
    load_scheduler,
    load_unet_and_vae,
    phi_denoising_loss,
    place_models,
    weights_dtype,
)
from threestudio.utils.base import BaseModule
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, Tensor

CAMERA_CONDITION_TYPES = ("extrinsics", "mvp")


@dataclass
class _FrozenParts:
    """Holds the large models outside ``nn.Module`` registration, so only the LoRA weights and
    the camera embedding enter the system's state dict and optimiser."""

    unet: UNet2DConditionModel
    unet_lora: UNet2DConditionModel
    vae: AutoencoderKL


@threestudio.register("stable-diffusion-vsd-guidance")
class StableDiffusionVSDGuidance(DiffusionGuidanceMixin, VAELatentsMixin, BaseModule):
    """Variational Score Distillation (ProlificDreamer): the pretrained score minus the score of
    a camera-conditioned LoRA model that is fitted to the current renders at the same time."""

    @dataclass
    class Config(
        BaseModule.Config, DiffusionGuidanceConfig, HiFAConfig, TokenMergingConfig, SpeedupConfig
    ):
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        # the LoRA branch starts from this model (the same name shares the pretrained UNet weights)
        pretrained_model_name_or_path_lora: str = "stabilityai/stable-diffusion-2-1"
        guidance_scale: float = 7.5  # CFG of the pretrained model
        # CFG of the LoRA model over the camera: est_u + s (est_cam - est_u); est_u sees the same
        # (conditional) text with a zero camera
        guidance_scale_lora: float = 1.0
        lora_cfg_training: bool = True  # drop the camera condition 10% of the time
        lora_n_timestamp_samples: int = 1  # timesteps per latent in the LoRA loss
        lora_rank: int = 4  # LoRA rank (alpha = rank)
        camera_condition_type: str = "extrinsics"  # extrinsics (c2w) | mvp

    cfg: Config

    def configure(self) -> None:
        if self.cfg.camera_condition_type not in CAMERA_CONDITION_TYPES:
            raise ConfigError(
                f"camera_condition_type '{self.cfg.camera_condition_type}' is unknown; use "
                "'extrinsics' or 'mvp'"
            )
        threestudio.info("Loading Stable Diffusion (VSD) ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name, name_lora = (
            self.cfg.pretrained_model_name_or_path,
            self.cfg.pretrained_model_name_or_path_lora,
        )
        unet, vae = load_unet_and_vae(name, self.weights_dtype)
        self.scheduler = load_scheduler(name)
        if name_lora == name:
            unet_lora = copy.deepcopy(unet)
            self.scheduler_lora = copy.deepcopy(self.scheduler)
        else:
            unet_lora = freeze(
                _load_pretrained(
                    UNet2DConditionModel,
                    name_lora,
                    subfolder="unet",
                    torch_dtype=self.weights_dtype,
                )
            )
            self.scheduler_lora = load_scheduler(name_lora)

        # camera (flattened 4x4 matrix) -> class embedding added to the timestep embedding;
        # the trainable parts stay float32 even when the frozen weights are fp16
        self.lora_layers, self.camera_embedding = add_camera_lora(
            unet_lora, camera_dim=16, lora_rank=self.cfg.lora_rank
        )

        for model in (unet, unet_lora) if unet_lora is not unet else (unet,):
            apply_token_merging(self.cfg, model)
        place_models(self.cfg, self.device, [unet, unet_lora], [vae])
        self.frozen = _FrozenParts(unet=unet, unet_lora=unet_lora, vae=vae)
        self.setup_schedule(self.scheduler)
        threestudio.info("Loaded Stable Diffusion (VSD)!")

    @property
    def vae(self) -> AutoencoderKL:
        return self.frozen.vae

    @property
    def unet(self) -> UNet2DConditionModel:
        return self.frozen.unet

    def forward_pretrained(self, latents: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        return self.run_unet(self.frozen.unet, latents, t, embeddings)

    def forward_lora(
        self, latents: Tensor, t: Tensor, embeddings: Tensor, camera: Tensor
    ) -> Tensor:
        """Noise (epsilon) predicted by the LoRA model, whatever it was trained to predict."""
        pred = self.run_unet(
            self.frozen.unet_lora, latents, t, embeddings, class_labels=camera.float()
        )
        if self.scheduler_lora.config.prediction_type == "v_prediction":
            alpha_bar = self.scheduler_lora.alphas_cumprod.to(latents)[t].view(-1, 1, 1, 1)
            pred = latents * (1 - alpha_bar) ** 0.5 + pred * alpha_bar**0.5
        return pred

    def camera_condition(self, kwargs: Dict[str, Any]) -> Float[Tensor, "B 16"]:
        return camera_condition(self.cfg.camera_condition_type, kwargs)

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
        camera = self.camera_condition(kwargs).to(latents)
        text_embeddings_vd, neg_weights = self.text_embeddings(
            prompt_utils, elevation, azimuth, camera_distances
        )
        # the LoRA model learns the distribution of renders per camera, not per view prompt
        text_embeddings = prompt_utils.get_text_embeddings(
            elevation, azimuth, camera_distances, view_dependent_prompting=False
        )
        text_cond = text_embeddings[:batch_size]
        t = self.sample_timesteps(batch_size)

        # the VSD step: the same noisy latents scored by the pretrained and the LoRA model
        with torch.no_grad():
            _, latents_noisy, noise_pred_pretrain = self.noise_and_predict(
                latents,
                t,
                self.guided_predictor(self.forward_pretrained, text_embeddings_vd, neg_weights),
            )
            # CFG over the camera: both halves see the conditional text, the second a zero camera
            cameras = torch.cat([camera, torch.zeros_like(camera)])
            noise_pred_est = self.guided_noise(
                lambda x, t_in, emb: self.forward_lora(x, t_in, emb, cameras),
                latents_noisy,
                t,
                torch.cat([text_cond, text_cond]),
                None,
                self.cfg.guidance_scale_lora,
                "uncond",  # as established, whatever cfg_form says for the pretrained model
            )["noise_pred"]
        w = self.sds_weight(t)
        grad = w * (noise_pred_pretrain - noise_pred_est)

        out = self.sds_loss(latents, grad, "loss_vsd")
        if self.cfg.use_img_loss and encoded["image"] is not None:
            # HiFA: pull the render from the LoRA model's one-step x0 toward the pretrained one's
            with torch.no_grad():
                alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
                alpha, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
                image_pretrain = self.decode_latents(
                    (latents_noisy - sigma * noise_pred_pretrain) / alpha
                )
                image_est = self.decode_latents((latents_noisy - sigma * noise_pred_est) / alpha)
                grad_img = w * (image_est - image_pretrain) * alpha / sigma
            out["loss_vsd_img"] = self.sds_loss(encoded["image"], grad_img)["loss_sds"]
        out["loss_lora"] = self.train_lora(latents, text_embeddings, camera)
        out.update(self.step_summary(t))
        return out

    def train_lora(
        self,
        latents: Float[Tensor, "B 4 h w"],
        text_embeddings: Float[Tensor, "BB N Nf"],
        camera: Float[Tensor, "B 16"],
    ) -> Tensor:
        """Denoising loss of the LoRA model on the current (detached) renders."""
        return phi_denoising_loss(
            lambda x, t, emb, cam: self.run_unet(
                self.frozen.unet_lora, x, t, emb, class_labels=cam.float()
            ),
            self.scheduler_lora,
            latents,
            text_embeddings[: latents.shape[0]],
            camera,
            self.cfg.lora_n_timestamp_samples,
            self.cfg.lora_cfg_training,
        )
