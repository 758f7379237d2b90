"""Score Distillation via Inversion (Lukoianov et al. 2024, https://arxiv.org/abs/2405.15891).

SDS noises the render with fresh random noise at every step; SDI instead finds the noise by
DDIM-inverting the render up to the timestep (a few coarse steps with the prompt's guidance at
``inversion_guidance_scale``), so the noisy latent is one the diffusion model would denoise back
to the render. The loss pulls the render's latent toward the one-step denoised estimate
``x0_hat`` of that noisy latent: for an inversion that ends exactly at t its gradient is
``sigma_t / alpha_t * (eps_pred - eps_inverted)``.
"""

import random
from dataclasses import dataclass

import numpy as np
import torch

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
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
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Callable, Dict, Float, List, Optional, Tensor, Tuple


@threestudio.register("stable-diffusion-sdi-guidance")
class StableDiffusionSDIGuidance(DiffusionGuidanceMixin, VAELatentsMixin, BaseObject):
    """SDI with Stable Diffusion: DDIM-inverted noise instead of random noise, and an x0 target."""

    @dataclass
    class Config(BaseObject.Config, DiffusionGuidanceConfig, TokenMergingConfig, SpeedupConfig):
        pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
        # the established SDS form cond + s (cond - uncond), for the step and the inversion
        cfg_form: str = "cond"
        # accepted as established; SDI's x0 target weights the noise residual by
        # sigma_t / alpha_t whatever this says
        weighting_strategy: str = "sds"
        # t_anneal runs from max_step_percent to min_step_percent over this many steps
        trainer_max_steps: int = 10000
        # accepted as established, which has no image-space loss for SDI (true is an error)
        use_img_loss: bool = False
        var_red: bool = True  # accepted as established (an SJC option; no effect here)
        max_items_eval: int = 4  # batch items in the guidance_eval images
        n_ddim_steps: int = 50  # DDIM steps of the guidance_eval denoising
        # invert the render to find the noise (false: random noise, an SDS-like x0 target)
        enable_sdi: bool = True
        # guidance scale of the inversion's predictions (negative: away from the prompt)
        inversion_guidance_scale: float = -7.5
        # DDIM steps of a full inversion to T; those below t are run, then one step to t + dt
        inversion_n_steps: int = 10
        # stochastic inversion: eta * sigma_DDIM * z added at every inversion step
        inversion_eta: float = 0.3
        # one timestep per step, linear from max_step_percent to min_step_percent over
        # trainer_max_steps (false: uniform in [min_step_percent, max_step_percent])
        t_anneal: bool = True

    cfg: Config

    def configure(self) -> None:
        if self.cfg.use_img_loss:
            raise ConfigError(
                "guidance.use_img_loss: the SDI guidance has no image-space loss (as established)"
            )
        if self.cfg.inversion_n_steps < 1:
            raise ConfigError("guidance.inversion_n_steps must be at least 1")
        threestudio.info("Loading Stable Diffusion (SDI) ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name = self.cfg.pretrained_model_name_or_path
        self.unet, self.vae = load_unet_and_vae(name, self.weights_dtype)
        self.scheduler = load_scheduler(name)
        self.scheduler_ddim = ddim_scheduler(self.scheduler)
        apply_token_merging(self.cfg, self.unet)
        place_models(self.cfg, self.device, [self.unet], [self.vae])
        self.setup_schedule(self.scheduler)
        config = self.scheduler.config
        if config.timestep_spacing not in ("leading", "trailing"):
            raise ConfigError(
                f"{name}: the SDI inversion supports the scheduler's timestep_spacing 'leading' "
                f"or 'trailing', not '{config.timestep_spacing}'"
            )
        # alpha_bar "before" the first step: 1 or alpha_bar_0, as the model's DDIM config says
        self.alpha_bar_start = (
            1.0 if config.get("set_alpha_to_one", True) else float(self.alphas[0])
        )
        threestudio.info("Loaded Stable Diffusion (SDI)!")

    def schedule_steps(self, epoch: int, global_step: int) -> None:
        if self.cfg.t_anneal:
            percent = self.annealed_percent(epoch, global_step, power=1.0)
            self.set_min_max_steps(percent, percent)
        else:
            super().schedule_steps(epoch, global_step)

    def forward_unet(self, latents: Tensor, t: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        return self.run_unet(self.unet, latents, t, encoder_hidden_states)

    # ---------- DDIM inversion ----------

    def alpha_bar(self, t: int) -> float:
        return self.alpha_bar_start if t < 0 else float(self.alphas[t])

    def split_prediction(
        self, model_output: Tensor, x: Tensor, alpha_bar: float
    ) -> Tuple[Tensor, Tensor]:
        """``(x0, eps)`` from the model's output at a noise level, in the model's
        parametrisation; x0 is clipped where the scheduler config says so."""
        alpha, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            eps = model_output
            x0 = (x - sigma * eps) / alpha
        elif kind == "v_prediction":
            x0 = alpha * x - sigma * model_output
            eps = alpha * model_output + sigma * x
        elif kind == "sample":
            x0 = model_output
            eps = (x - alpha * x0) / sigma
        else:
            raise ConfigError(f"the SDI guidance cannot read prediction_type '{kind}'")
        if self.scheduler.config.clip_sample:
            limit = self.scheduler.config.clip_sample_range
            x0 = x0.clamp(-limit, limit)
        return x0, eps

    def inversion_timesteps(self, t: int, delta: int) -> List[int]:
        """The inversion's path up to ``t``: the DDIM grid of ``inversion_n_steps`` steps (in
        the scheduler's spacing) below ``t``, preceded by one step before the grid's start,
        then a last step to ``min(t + delta, T - 1)``."""
        n_train = self.num_train_timesteps
        n = self.cfg.inversion_n_steps
        if self.scheduler.config.timestep_spacing == "leading":
            ratio = n_train // n
            grid = np.arange(n) * ratio + self.scheduler.config.steps_offset
        else:  # trailing
            ratio = n_train / n
            grid = np.round(np.arange(n_train, 0, -ratio)[::-1]).astype(np.int64) - 1
        below = [int(g) for g in grid if g < t]
        start = int(grid[0] - ratio)
        return [start] + below + [min(t + delta, n_train - 1)]

    def inversion_jitter(self) -> int:
        """The random overshoot of the last inversion step, in [0, T / inversion_n_steps),
        drawn with Python's generator as established."""
        return int(random.random() * self.num_train_timesteps // self.cfg.inversion_n_steps)

    @torch.no_grad()
    def invert(
        self,
        latents: Float[Tensor, "B 4 h w"],
        t: int,
        predict: Callable[[Tensor, Tensor], Tensor],
        delta: Optional[int] = None,
    ) -> Dict[str, Any]:
        """DDIM-invert clean ``latents`` to about ``t`` with the denoiser ``predict(x, t_batch)``.
        Returns the noisy latents, the timestep they reached (``t_end = t + delta``) and the
        noise they hold relative to ``latents`` at that level."""
        if delta is None:
            delta = self.inversion_jitter()
        batch_size = latents.shape[0]
        path = self.inversion_timesteps(t, delta)
        x = latents
        for t_cur, t_next in zip(path[:-1], path[1:]):
            t_in = torch.full((batch_size,), t_cur, dtype=torch.long, device=latents.device)
            x0, eps = self.split_prediction(predict(x, t_in), x, self.alpha_bar(t_cur))
            a_cur, a_next = self.alpha_bar(t_cur), self.alpha_bar(t_next)
            x = a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps
            # the variance DDIM's sampler would add on the way back down (t_next -> t_cur)
            variance = (1 - a_cur) / (1 - a_next) * (1 - a_next / a_cur)
            # drawn even at eta = 0, as established (the random stream stays the same)
            x = x + self.cfg.inversion_eta * variance**0.5 * torch.randn_like(x)
        t_end = path[-1]
        a_end = self.alpha_bar(t_end)
        noise = (x - a_end**0.5 * latents) / (1 - a_end) ** 0.5
        return {"latents_noisy": x, "noise": noise, "t_end": t_end}

    # ---------- the SDI step ----------

    def __call__(
        self,
        rgb: Float[Tensor, "B H W C"],
        prompt_utils,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        rgb_as_latents: bool = False,
        guidance_eval: bool = False,
        test_info: bool = False,
        call_with_defined_noise: Optional[Float[Tensor, "B 4 h w"]] = None,
        **kwargs,
    ) -> Dict[str, Any]:
        batch_size = rgb.shape[0]
        latents = self.render_to_latents(rgb, rgb_as_latents)["latents"]
        text_embeddings, neg_weights = self.text_embeddings(
            prompt_utils, elevation, azimuth, camera_distances
        )
        # one timestep for the batch: the inversion walks one timestep grid (with t_anneal,
        # min_step == max_step anyway)
        t = self.sample_timesteps(1).repeat(batch_size)

        with torch.no_grad():
            if call_with_defined_noise is not None:
                noise = call_with_defined_noise
                latents_noisy = self.scheduler.add_noise(latents, noise, t)
            elif self.cfg.enable_sdi:
                inverting = self.guided_predictor(
                    self.forward_unet,
                    text_embeddings,
                    neg_weights,
                    guidance_scale=self.cfg.inversion_guidance_scale,
                )
                inverted = self.invert(latents, int(t[0]), inverting)
                # as established, the latents reached at t + delta are denoised as if at t
                latents_noisy, noise = inverted["latents_noisy"], inverted["noise"]
            else:
                noise = torch.randn_like(latents)
                latents_noisy = self.scheduler.add_noise(latents, noise, t)
            guided = self.guided_predictor(self.forward_unet, text_embeddings, neg_weights)
            noise_pred = guided(latents_noisy, t)
            target, _ = self.split_prediction(noise_pred, latents_noisy, self.alpha_bar(int(t[0])))

        # 0.5 mean((latents - x0_hat)^2) / B, the published loss (lambda_sdi: 1 is tuned to it)
        out = self.sds_loss(latents, latents - target, "loss_sdi", reduction="mean")
        out.update(self.step_summary(t))

        if test_info:
            with torch.no_grad():
                out["target"] = self.decode_latents(target)[0].permute(1, 2, 0)
                out["target_latent"] = target
                out["noisy_img"] = self.decode_latents(latents_noisy)[0].permute(1, 2, 0)
                out["noise_img"] = self.decode_latents(noise)[0].permute(1, 2, 0)
                out["noise_pred"] = noise_pred
            return out
        if guidance_eval:
            out["eval"] = ddim_inspection(
                self.scheduler_ddim,
                self.item_guided_predictor(self.forward_unet, text_embeddings, neg_weights),
                self.decode_latents,
                latents_noisy,
                noise_pred,
                t,
                num_inference_steps=self.cfg.n_ddim_steps,
                max_items=self.cfg.max_items_eval,
            )
        return out
