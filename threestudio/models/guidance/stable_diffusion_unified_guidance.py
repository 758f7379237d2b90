"""One Stable Diffusion guidance for SDS and VSD, with HiFA's options, chosen by config.

``guidance_type: sds`` compares the pretrained model's guided noise with the noise that was
added (DreamFusion); ``guidance_type: vsd`` compares it with the noise predicted by phi, a
camera-conditioned LoRA model fitted to the renders at the same time (ProlificDreamer), which by
default is the pretrained UNet itself with LoRA adapters (switched off for the pretrained
prediction). HiFA adds an image-space loss from the one-step x0 estimates (``use_img_loss``)
and a single timestep annealed with the square root of the progress (``sqrt_anneal``).

Its conventions are the established unified guidance's, which differ from
``stable-diffusion-guidance``: one timestep per batch, the diffusers CFG form
``uncond + s (cond - uncond)``, the loss named ``loss_sd`` (``loss_sd_img``, ``loss_train_phi``),
and its own weightings, ``dreamfusion``: ``1 - sqrt(alpha_bar)`` and ``fantasia3d``:
``alpha_bar^(1/4) (1 - sqrt(alpha_bar))`` (``sds`` and ``uniform`` mean what they mean in the
other guidances). Besides the losses it returns scalars (``grad_norm``, ``min_step``,
``max_step``, ``timestep``) and the images the config asks for (``rgb_1step_orig``,
``rgb_multistep_orig`` with ``latents_multistep_orig``).
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

import threestudio
from threestudio.models.guidance.base import (
    CAMERA_CONDITION_DIMS,
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
    ddim_inspection,
    ddim_scheduler,
    freeze,
    load_scheduler,
    load_unet_and_vae,
    phi_denoising_loss,
    place_models,
    weights_dtype,
)
from threestudio.utils.base import BaseModule
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import (
    Any,
    Callable,
    Dict,
    Float,
    Mapping,
    Optional,
    Tensor,
    Tuple,
)

GUIDANCE_TYPES = ("sds", "vsd")


@dataclass
class UnifiedGuidanceConfig:
    """Config fields of the unified guidances (Stable Diffusion and Zero-1-to-3): SDS or VSD,
    the images they can return, and VSD's phi model."""

    # sds: the added noise is the reference | vsd: phi's predicted noise is
    guidance_type: str = "sds"
    return_rgb_1step_orig: bool = False  # also return rgb_1step_orig, the decoded x0 estimate
    # also return rgb_multistep_orig: n_rgb_multistep_orig_steps first-order DPM-Solver
    # steps from the noisy latents down to a clean image
    return_rgb_multistep_orig: bool = False
    n_rgb_multistep_orig_steps: int = 4  # see return_rgb_multistep_orig
    # VSD: phi starts from this model (null: the pretrained UNet itself, LoRA on top)
    vsd_phi_model_name_or_path: Optional[str] = None
    # phi's CFG over the camera: est_u + s (est_cam - est_u), est_u with a zero camera
    vsd_guidance_scale_phi: float = 1.0
    vsd_use_lora: bool = True  # VSD: LoRA adapters on phi's attention (false: camera only)
    vsd_lora_rank: int = 4  # VSD: LoRA rank (alpha = rank)
    vsd_lora_cfg_training: bool = False  # VSD: drop phi's camera 10% of the time in training
    vsd_lora_n_timestamp_samples: int = 1  # VSD: timesteps per latent in loss_train_phi
    vsd_use_camera_condition: bool = True  # VSD: phi sees the camera (a class embedding)
    # VSD: extrinsics (c2w) | mvp (mvp_mtx) | spherical (elevation, sin/cos azimuth, distance)
    vsd_camera_condition_type: Optional[str] = "extrinsics"
    max_items_eval: int = 4  # batch items in the guidance_eval images


@dataclass
class _FrozenParts:
    """The large models, outside ``nn.Module`` registration: only phi's LoRA weights and camera
    embedding enter the system's state dict and optimiser."""

    unet: Any
    vae: Any
    unet_phi: Optional[Any] = None  # VSD's phi model (``unet`` itself when shared)


class UnifiedGuidanceMixin:
    """The parts of the unified step shared by its Stable Diffusion and Zero-1-to-3 versions:
    the config checks, phi (built on the pretrained UNet or a model of its own), the
    pretrained UNet with phi switched off, the established weightings, phi's camera CFG and
    the multistep x0 estimate. The class sets ``self.frozen`` (a ``_FrozenParts``),
    ``self.scheduler`` and defines ``forward_phi(x, t, cond, camera)``."""

    weighting_strategies = ("dreamfusion", "sds", "uniform", "fantasia3d")
    frozen: _FrozenParts

    @classmethod
    def has_trainable_parameters(cls, cfg: Mapping[str, Any]) -> bool:
        """Only VSD has trainable parts (phi's LoRA and camera embedding): with SDS the system
        builds this guidance when fitting starts, as any frozen guidance."""
        return (cfg or {}).get("guidance_type", "sds") == "vsd"

    def check_guidance_type(self) -> None:
        if self.cfg.guidance_type not in GUIDANCE_TYPES:
            raise ConfigError(
                f"guidance.guidance_type '{self.cfg.guidance_type}' is unknown; use 'sds' or 'vsd'"
            )
        self.is_vsd = self.cfg.guidance_type == "vsd"
        use_camera = self.is_vsd and self.cfg.vsd_use_camera_condition
        if use_camera and self.cfg.vsd_camera_condition_type not in CAMERA_CONDITION_DIMS:
            raise ConfigError(
                f"guidance.vsd_camera_condition_type '{self.cfg.vsd_camera_condition_type}' is "
                f"unknown; use one of {', '.join(CAMERA_CONDITION_DIMS)}"
            )

    def build_phi(self, unet: Any, load_phi: Callable[[str], Tuple[Any, Any]]) -> Optional[Any]:
        """VSD's phi model: the pretrained ``unet`` itself when ``vsd_phi_model_name_or_path``
        is null, else ``load_phi(name) -> (unet, scheduler)``; with a camera embedding and
        LoRA as configured (``self.lora_layers``, ``self.camera_embedding``). None for SDS."""
        self.shares_unet = self.is_vsd and self.cfg.vsd_phi_model_name_or_path is None
        if not self.is_vsd:
            return None
        if self.shares_unet:
            unet_phi, self.scheduler_phi = unet, self.scheduler
        else:
            unet_phi, self.scheduler_phi = load_phi(self.cfg.vsd_phi_model_name_or_path)
        camera_dim = None
        if self.cfg.vsd_use_camera_condition:
            camera_dim = CAMERA_CONDITION_DIMS[self.cfg.vsd_camera_condition_type]
        lora_rank = self.cfg.vsd_lora_rank if self.cfg.vsd_use_lora else None
        self.lora_layers, camera_embedding = add_camera_lora(unet_phi, camera_dim, lora_rank)
        if camera_embedding is not None:
            self.camera_embedding = camera_embedding
        return unet_phi

    def phi_camera(self, batch: Dict[str, Any], like: Tensor) -> Optional[Tensor]:
        """The camera phi sees (None without ``vsd_use_camera_condition``)."""
        if not self.cfg.vsd_use_camera_condition:
            return None
        return camera_condition(self.cfg.vsd_camera_condition_type, batch).to(like)

    @contextmanager
    def pretrained_unet(self) -> Iterator[Any]:
        """The pretrained UNet; when phi shares it, with phi's LoRA and camera switched off."""
        unet = self.frozen.unet
        if not self.shares_unet:
            yield unet
            return
        class_embedding = unet.class_embedding
        if self.cfg.vsd_use_lora:
            unet.disable_adapters()
        unet.class_embedding = None
        try:
            yield unet
        finally:
            unet.class_embedding = class_embedding
            if self.cfg.vsd_use_lora:
                unet.enable_adapters()

    def to_epsilon(self, pred: Tensor, latents: Tensor, t: Tensor, scheduler: Any) -> Tensor:
        if scheduler.config.prediction_type != "v_prediction":
            return pred
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        return latents * (1 - alpha_bar) ** 0.5 + pred * alpha_bar**0.5

    def sds_weight(self, t: Tensor) -> Float[Tensor, "B 1 1 1"]:
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        if self.cfg.weighting_strategy == "dreamfusion":
            return 1 - alpha_bar**0.5
        if self.cfg.weighting_strategy == "fantasia3d":
            return alpha_bar**0.25 * (1 - alpha_bar**0.5)
        return super().sds_weight(t)

    @torch.no_grad()
    def phi_noise(
        self,
        latents_noisy: Tensor,
        t: Tensor,
        cond: Tensor,
        camera: Optional[Tensor],
    ) -> Tensor:
        """phi's noise with CFG over the camera (both halves see the same condition)."""
        cameras = None if camera is None else torch.cat([camera, torch.zeros_like(camera)])

        def predict(x: Tensor, t_in: Tensor, emb: Tensor) -> Tensor:
            pred = self.forward_phi(x, t_in, emb, cameras)
            return self.to_epsilon(pred, x, t_in, self.scheduler_phi)

        return self.guided_noise(
            predict,
            latents_noisy,
            t,
            torch.cat([cond, cond]),
            None,
            self.cfg.vsd_guidance_scale_phi,
            "uncond",
        )["noise_pred"]

    @torch.no_grad()
    def denoise_multistep(
        self,
        latents_noisy: Float[Tensor, "B 4 h w"],
        t_start: int,
        predict: Callable[[Tensor, Tensor], Tensor],
    ) -> Float[Tensor, "B 4 h w"]:
        """A clean latent from the noisy one in ``n_rgb_multistep_orig_steps`` first-order
        DPM-Solver steps, as established: the solver's schedule is built over ``t_start``
        training timesteps; ``predict(x, t_batch)`` is the guided raw model prediction."""
        from diffusers import DPMSolverSinglestepScheduler

        solver = DPMSolverSinglestepScheduler.from_config(
            self.scheduler.config, solver_order=1, num_train_timesteps=t_start
        )
        solver.set_timesteps(self.cfg.n_rgb_multistep_orig_steps, device=latents_noisy.device)
        batch_size = latents_noisy.shape[0]
        x = latents_noisy * solver.init_noise_sigma
        for t_i in solver.timesteps:
            x_in = solver.scale_model_input(x, t_i)
            x = solver.step(predict(x_in, t_i.expand(batch_size)), t_i, x).prev_sample
        return x


@threestudio.register("stable-diffusion-unified-guidance")
class StableDiffusionUnifiedGuidance(
    UnifiedGuidanceMixin, DiffusionGuidanceMixin, VAELatentsMixin, BaseModule
):
    """SDS or VSD with Stable Diffusion, HiFA's image loss and timestep annealing optional."""

    @dataclass
    class Config(
        BaseModule.Config,
        DiffusionGuidanceConfig,
        HiFAConfig,
        TokenMergingConfig,
        SpeedupConfig,
        UnifiedGuidanceConfig,
    ):
        # w(t): dreamfusion = 1 - sqrt(alpha_bar) | fantasia3d = alpha_bar^(1/4) (1 - sqrt(alpha_bar))
        # (the established unified guidance's formulas) | sds = 1 - alpha_bar | uniform = 1
        weighting_strategy: str = "dreamfusion"
        # HiFA's image-space loss (loss_sd_img) from the one-step x0 estimates
        use_img_loss: bool = True
        # accepted as established, which loads a ControlNet here but never uses it (a warning)
        controlnet_model_name_or_path: Optional[str] = None
        preprocessor: Optional[str] = None  # accepted as established; unused (a warning)
        control_scale: float = 1.0  # accepted as established; unused
        lora_model_name_or_path: Optional[str] = None  # accepted as established; unused (a warning)

    cfg: Config

    def configure(self) -> None:
        self.check_guidance_type()
        for key in ("controlnet_model_name_or_path", "preprocessor", "lora_model_name_or_path"):
            if getattr(self.cfg, key) is not None:
                threestudio.warn(f"guidance.{key} is not used by the unified guidance; ignored")

        threestudio.info("Loading Stable Diffusion (unified guidance) ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name = self.cfg.pretrained_model_name_or_path
        unet, vae = load_unet_and_vae(name, self.weights_dtype)
        self.scheduler = load_scheduler(name)
        self.scheduler_ddim = ddim_scheduler(self.scheduler)

        def load_phi(phi_name: str):
            phi = _load_pretrained(
                type(unet), phi_name, subfolder="unet", torch_dtype=self.weights_dtype
            )
            return freeze(phi), load_scheduler(phi_name)

        unet_phi = self.build_phi(unet, load_phi)
        unets = [unet] if unet_phi is None or self.shares_unet else [unet, unet_phi]
        for model in unets:
            apply_token_merging(self.cfg, model)
        place_models(self.cfg, self.device, unets, [vae])
        self.frozen = _FrozenParts(unet=unet, vae=vae, unet_phi=unet_phi)
        self.setup_schedule(self.scheduler)
        threestudio.info("Loaded Stable Diffusion (unified guidance)!")

    @property
    def unet(self) -> Any:
        return self.frozen.unet

    @property
    def vae(self) -> Any:
        return self.frozen.vae

    # ---------- the two denoisers ----------

    def forward_pretrained(self, latents: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        """The pretrained model's noise (epsilon) prediction."""
        with self.pretrained_unet() as unet:
            pred = self.run_unet(unet, latents, t, embeddings)
        return self.to_epsilon(pred, latents, t, self.scheduler)

    def forward_phi(
        self, latents: Tensor, t: Tensor, embeddings: Tensor, camera: Optional[Tensor]
    ) -> Tensor:
        """phi's raw prediction (in its own parametrisation)."""
        return self.run_unet(
            self.frozen.unet_phi,
            latents,
            t,
            embeddings,
            class_labels=None if camera is None else camera.float(),
        )

    # ---------- the step ----------

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
        # one timestep for the whole batch, as established
        t = self.sample_timesteps(1).repeat(batch_size)
        text_embeddings, neg_weights = self.text_embeddings(
            prompt_utils, elevation, azimuth, camera_distances
        )
        guided = self.guided_predictor(self.forward_pretrained, text_embeddings, neg_weights)
        noise, latents_noisy, eps_pretrain = self.noise_and_predict(latents, t, guided)
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        alpha, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        latents_1step_orig = (latents_noisy - sigma * eps_pretrain) / alpha

        loss_train_phi = None
        if self.is_vsd:
            # phi learns the renders per camera, not per view prompt
            text_cond = prompt_utils.get_text_embeddings(
                elevation, azimuth, camera_distances, view_dependent_prompting=False
            )[:batch_size]
            batch = dict(
                kwargs, elevation=elevation, azimuth=azimuth, camera_distances=camera_distances
            )
            camera = self.phi_camera(batch, latents)
            eps_phi = self.phi_noise(latents_noisy, t, text_cond, camera)
            loss_train_phi = phi_denoising_loss(
                self.forward_phi,
                self.scheduler_phi,
                latents,
                text_cond,
                camera,
                self.cfg.vsd_lora_n_timestamp_samples,
                self.cfg.vsd_lora_cfg_training,
            )
        else:
            eps_phi = noise

        w = self.sds_weight(t)
        out = self.sds_loss(latents, w * (eps_pretrain - eps_phi), "loss_sd")
        # scalars besides the losses and the images asked for (systems log every other output):
        # the per-sample tensors the established guidance also returns (timesteps, latents,
        # latents_1step_orig, rgb, weights, lambdas) are left out
        out.update(self.step_summary(t))

        image = encoded["image"]
        need_image = self.cfg.return_rgb_1step_orig or (self.cfg.use_img_loss and image is not None)
        if need_image:
            with torch.no_grad():
                image_pretrain = self.decode_latents(latents_1step_orig)
        if self.cfg.use_img_loss and image is not None:
            # HiFA: the render (SDS) or phi's x0 estimate (VSD) against the pretrained one's
            with torch.no_grad():
                if self.is_vsd:
                    image_est = self.decode_latents((latents_noisy - sigma * eps_phi) / alpha)
                else:
                    image_est = image
                grad_img = w * (image_est - image_pretrain) * alpha / sigma
            out["loss_sd_img"] = self.sds_loss(image, grad_img, "loss_sd_img")["loss_sd_img"]
        if self.cfg.return_rgb_1step_orig:
            out["rgb_1step_orig"] = image_pretrain.permute(0, 2, 3, 1)
        if self.cfg.return_rgb_multistep_orig:
            latents_multistep = self.multistep_orig(
                latents_noisy, int(t[0]), prompt_utils, elevation, azimuth, camera_distances
            )
            with torch.no_grad():
                rgb_multistep = self.decode_latents(latents_multistep)
            out["latents_multistep_orig"] = latents_multistep
            out["rgb_multistep_orig"] = rgb_multistep.permute(0, 2, 3, 1)
        if loss_train_phi is not None:
            out["loss_train_phi"] = loss_train_phi
        if guidance_eval:
            out["eval"] = ddim_inspection(
                self.scheduler_ddim,
                self.item_guided_predictor(self.forward_pretrained, text_embeddings, neg_weights),
                self.decode_latents,
                latents_noisy,
                eps_pretrain,
                t,
                max_items=self.cfg.max_items_eval,
            )
        return out

    @torch.no_grad()
    def multistep_orig(
        self,
        latents_noisy: Float[Tensor, "B 4 h w"],
        t_start: int,
        prompt_utils,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
    ) -> Float[Tensor, "B 4 h w"]:
        """``denoise_multistep`` with plain (not Perp-Neg) CFG in the diffusers form, as
        established."""
        embeddings = prompt_utils.get_text_embeddings(
            elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
        )
        cond, uncond = embeddings.chunk(2)
        scale = self.cfg.guidance_scale

        def predict(x_in: Tensor, t_batch: Tensor) -> Tensor:
            with self.pretrained_unet() as unet:
                if scale <= 1.0:
                    return self.run_unet(unet, x_in, t_batch, cond)
                pred_uncond, pred_cond = self.run_unet(
                    unet,
                    torch.cat([x_in, x_in]),
                    torch.cat([t_batch, t_batch]),
                    torch.cat([uncond, cond]),
                ).chunk(2)
            return pred_uncond + scale * (pred_cond - pred_uncond)

        return self.denoise_multistep(latents_noisy, t_start, predict)
