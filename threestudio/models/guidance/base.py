"""Pieces every diffusion guidance shares: loading pretrained parts offline-safely (one path
for UNet/VAE and one for the schedulers), the timestep schedule, the SDS weighting w(t),
noising and classifier-free guidance (plain or Perp-Neg), the detach-target loss, DDIM-based
inspection and editing, and VSD's camera-conditioned LoRA model (phi).

Each text or image guidance keeps its own SDS step in one function and calls these helpers for
the rest; the editing guidances (InstructPix2Pix, ControlNet) share one call, ``ImageEditMixin``.
"""

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError
from threestudio.utils.hub import load_pretrained
from threestudio.utils.misc import C
from threestudio.utils.ops import perpendicular_component
from threestudio.utils.typing import Any, Callable, Dict, Float, Optional, Tensor, Tuple

WEIGHTING_STRATEGIES = ("sds", "uniform", "fantasia3d")
CFG_FORMS = ("cond", "uncond")


def combine_cfg(cond: Tensor, uncond: Tensor, scale: float, form: str) -> Tensor:
    """Classifier-free guidance of two predictions. ``cond``: ``cond + s (cond - uncond)``, the
    form of DreamFusion's and threestudio's SDS/SJC/IF guidances (their published scales, 100
    for SD and 20 for IF, were tuned for it; an effective diffusers scale of s + 1).
    ``uncond``: ``uncond + s (cond - uncond)``, the diffusers form (VSD, ControlNet, Zero123)."""
    base = cond if form == "cond" else uncond
    return base + scale * (cond - uncond)


def _load_pretrained(cls, name: str, **kwargs):
    """``cls.from_pretrained(name, **kwargs)``; weights not available offline become one
    ``MissingModelError`` line saying how to provide them (see ``threestudio.utils.hub``)."""
    return load_pretrained(cls, name, **kwargs)


def load_unet_and_vae(
    name: str, torch_dtype: torch.dtype, cache_dir: Optional[str] = None
) -> Tuple[Any, Any]:
    """The frozen ``unet`` and ``vae`` of a Stable-Diffusion-layout model ``name``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    load = {"torch_dtype": torch_dtype, "cache_dir": cache_dir}
    unet = freeze(_load_pretrained(UNet2DConditionModel, name, subfolder="unet", **load))
    vae = freeze(_load_pretrained(AutoencoderKL, name, subfolder="vae", **load))
    return unet, vae


def load_scheduler(name: str, cache_dir: Optional[str] = None) -> Any:
    """The training scheduler (DDPM) from the ``scheduler`` folder of model ``name``."""
    from diffusers import DDPMScheduler

    return _load_pretrained(DDPMScheduler, name, subfolder="scheduler", cache_dir=cache_dir)


def ddim_scheduler(
    scheduler: Any, ddim_name: Optional[str] = None, cache_dir: Optional[str] = None
) -> Any:
    """The DDIM scheduler that edits and ``guidance_eval`` sample with: loaded from model
    ``ddim_name`` when given, else built from the training ``scheduler``'s config."""
    from diffusers import DDIMScheduler

    if ddim_name is None:
        return DDIMScheduler.from_config(scheduler.config)
    return _load_pretrained(DDIMScheduler, ddim_name, subfolder="scheduler", cache_dir=cache_dir)


_said_cpu_float32 = False


def weights_dtype(half_precision_weights: bool, device: torch.device) -> torch.dtype:
    """fp16 only where it runs well (CUDA); on the CPU fp16 kernels are slow or missing."""
    global _said_cpu_float32
    if half_precision_weights and device.type == "cuda":
        return torch.float16
    if half_precision_weights and not _said_cpu_float32:
        threestudio.info("half_precision_weights is ignored on the CPU: using float32 weights")
        _said_cpu_float32 = True
    return torch.float32


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def resize_image_pair(
    rgb: Float[Tensor, "B H W C"], cond_rgb: Float[Tensor, "B H W C"], fixed_size: int
) -> Tuple[Float[Tensor, "B C h w"], Float[Tensor, "B C h w"]]:
    """A render and its conditioning image as BCHW at ``fixed_size`` (when > 0) or at the
    render's size rounded down to a multiple of 8 (what the VAE accepts)."""
    height, width = rgb.shape[1:3]
    size = (fixed_size, fixed_size) if fixed_size > 0 else (height // 8 * 8, width // 8 * 8)
    return tuple(
        F.interpolate(x.permute(0, 3, 1, 2), size, mode="bilinear", align_corners=False)
        for x in (rgb, cond_rgb)
    )


@dataclass
class DiffusionGuidanceConfig:
    """Config fields shared by the diffusion guidances (mixed into each ``Config``)."""

    pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"  # hub id or folder
    half_precision_weights: bool = True  # fp16 weights on CUDA; the CPU keeps float32
    guidance_scale: float = 100.0  # classifier-free guidance scale s (see cfg_form)
    # plain CFG: cond = eps_c + s (eps_c - eps_u) | uncond = eps_u + s (eps_c - eps_u) (diffusers);
    # Perp-Neg is always eps_u + s (delta + perp. negatives); InstructPix2Pix has its own
    cfg_form: str = "uncond"
    grad_clip: Optional[Any] = None  # a C() schedule; clamps every gradient element to [-c, c]
    # timesteps are drawn from [1000 * min, 1000 * max]; both C() schedules
    min_step_percent: Any = 0.02
    max_step_percent: Any = 0.98  # see min_step_percent
    # w(t): sds = 1 - alpha_bar | uniform = 1 | fantasia3d = sqrt(alpha_bar) (1 - alpha_bar)
    weighting_strategy: str = "sds"
    view_dependent_prompting: bool = True  # passed to the prompt processor
    # after anneal_start_step, max_step_percent is replaced by max_step_percent_annealed
    max_step_percent_annealed: float = 0.5
    anneal_start_step: Optional[int] = None  # null: never


@dataclass
class HiFAConfig:
    """HiFA's options (https://hifa-team.github.io/HiFA-site/), shared by SDS and VSD."""

    # one timestep per step, t = min + (max - min) (1 - sqrt(step / trainer_max_steps))
    sqrt_anneal: bool = False
    trainer_max_steps: int = 25000  # for sqrt_anneal; set it to trainer.max_steps
    # also an image-space loss (loss_sds_img / loss_vsd_img) from the one-step x0 estimates
    use_img_loss: bool = False


@dataclass
class TokenMergingConfig:
    """Token merging (ToMe for SD) on the UNet, an opt-in soft dependency (``pip install tomesd``)."""

    token_merging: bool = False  # patch the UNet with tomesd (skipped, with a warning, without it)
    token_merging_params: Optional[dict] = None  # keyword arguments of tomesd.apply_patch


def apply_token_merging(cfg: Any, unet: torch.nn.Module) -> None:
    """``cfg``: a guidance's parsed config (a structured DictConfig holding TokenMergingConfig's
    fields, not a TokenMergingConfig instance)."""
    if not cfg.token_merging:
        return
    try:
        import tomesd
    except ImportError:
        threestudio.warn("token_merging needs tomesd (pip install tomesd); running without it")
        return
    tomesd.apply_patch(unet, **(cfg.token_merging_params or {}))


@dataclass
class SpeedupConfig:
    """Opt-in speed-ups; the CUDA-only ones are skipped (with a log line) on the CPU."""

    enable_memory_efficient_attention: bool = False  # xformers attention (CUDA only)
    enable_sequential_cpu_offload: bool = False  # accelerate's CPU offload (CUDA only)
    enable_attention_slicing: bool = False  # sliced attention
    enable_channels_last: bool = False  # channels-last UNet
    enable_channels_last_format: bool = False  # the name published threestudio configs use


def place_models(cfg: Any, device: torch.device, unets: list, others: list) -> None:
    """Move models to ``device`` and apply the speed-ups ``cfg`` asks for (a parsed guidance
    config holding SpeedupConfig's fields: a DictConfig, not the dataclass)."""
    on_cuda = device.type == "cuda"
    if not on_cuda and (cfg.enable_memory_efficient_attention or cfg.enable_sequential_cpu_offload):
        threestudio.info("memory-efficient attention and CPU offload need CUDA; skipped")
    for unet in unets:
        if cfg.enable_memory_efficient_attention and on_cuda:
            unet.enable_xformers_memory_efficient_attention()
        if cfg.enable_attention_slicing:
            unet.set_attention_slice("auto")
        if cfg.enable_channels_last or cfg.enable_channels_last_format:
            unet.to(memory_format=torch.channels_last)
    for model in unets + others:
        if cfg.enable_sequential_cpu_offload and on_cuda:
            from accelerate import cpu_offload

            cpu_offload(model, device)
        else:
            model.to(device)


class DiffusionGuidanceMixin:
    """Schedule, weighting, CFG and loss helpers; the class sets ``self.alphas`` (the
    cumulative alpha-bar table, on the device) and ``self.num_train_timesteps`` in configure()."""

    alphas: Float[Tensor, "T"]
    num_train_timesteps: int
    # the names weighting_strategy may take (a guidance with its own w(t) names its own)
    weighting_strategies: Tuple[str, ...] = WEIGHTING_STRATEGIES

    def run_unet(
        self, unet: Any, x: Tensor, t: Tensor, encoder_hidden_states: Tensor, **kwargs
    ) -> Tensor:
        """``unet``'s prediction, computed in ``self.weights_dtype`` and returned in ``x``'s."""
        input_dtype = x.dtype
        return unet(
            x.to(self.weights_dtype),
            t.to(self.weights_dtype),
            encoder_hidden_states=encoder_hidden_states.to(self.weights_dtype),
            **kwargs,
        ).sample.to(input_dtype)

    def setup_schedule(self, scheduler) -> None:
        if self.cfg.weighting_strategy not in self.weighting_strategies:
            raise ConfigError(
                f"weighting_strategy '{self.cfg.weighting_strategy}' is unknown; use one of "
                f"{', '.join(self.weighting_strategies)}"
            )
        if self.cfg.cfg_form not in CFG_FORMS:
            raise ConfigError(
                f"cfg_form '{self.cfg.cfg_form}' is unknown; use 'cond' (cond + s (cond - uncond)) "
                "or 'uncond' (uncond + s (cond - uncond))"
            )
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.alphas = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.schedule_steps(0, 0)
        self.grad_clip_val: Optional[float] = None

    def set_min_max_steps(
        self, min_step_percent: float = 0.02, max_step_percent: float = 0.98
    ) -> None:
        self.min_step = int(self.num_train_timesteps * min_step_percent)
        self.max_step = int(self.num_train_timesteps * max_step_percent)

    def sqrt_annealed_percent(self, epoch: int, global_step: int) -> float:
        """HiFA's timestep at this step, as a fraction of the training timesteps:
        ``min + (max - min) (1 - sqrt(step / trainer_max_steps))``."""
        return self.annealed_percent(epoch, global_step, power=0.5)

    def annealed_percent(self, epoch: int, global_step: int, power: float) -> float:
        """One timestep annealed from max to min over ``trainer_max_steps``, as a fraction of the
        training timesteps: ``min + (max - min) (1 - (step / trainer_max_steps) ** power)``
        (HiFA: power 0.5; SDI: power 1). A schedule in ``max_step_percent`` contributes its
        second entry (its start value in the ``[start_step, start, end, end_step]`` form), as
        the established guidances read it."""
        # past trainer_max_steps the established formula goes below min (and then below 0,
        # indexing alpha_bar from the end); hold it at min instead
        progress = min(global_step / self.cfg.trainer_max_steps, 1.0) ** power
        max_percent = self.cfg.max_step_percent
        if not isinstance(max_percent, (int, float)):
            max_percent = max_percent[1]
        min_percent = C(self.cfg.min_step_percent, epoch, global_step)
        return (max_percent - min_percent) * (1 - progress) + min_percent

    def schedule_steps(self, epoch: int, global_step: int) -> None:
        """``min_step``/``max_step`` at this step: the C() schedules (or with ``sqrt_anneal``
        both the one annealed timestep), then ``anneal_start_step`` if set."""
        if getattr(self.cfg, "sqrt_anneal", False):
            percent = self.sqrt_annealed_percent(epoch, global_step)
            self.set_min_max_steps(percent, percent)
        else:
            self.set_min_max_steps(
                C(self.cfg.min_step_percent, epoch, global_step),
                C(self.cfg.max_step_percent, epoch, global_step),
            )
        start = self.cfg.anneal_start_step
        if start is not None and global_step > start:
            self.max_step = int(self.num_train_timesteps * self.cfg.max_step_percent_annealed)

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        if self.cfg.grad_clip is not None:
            self.grad_clip_val = C(self.cfg.grad_clip, epoch, global_step)
        self.schedule_steps(epoch, global_step)

    def step_summary(self, t: Tensor) -> Dict[str, Any]:
        """The non-loss outputs of a guidance call, each a scalar (systems log every one with
        ``self.log``): the timestep range (ints, as established) and the batch's mean timestep."""
        return {"min_step": self.min_step, "max_step": self.max_step, "timestep": t.float().mean()}

    def sample_timesteps(self, batch_size: int) -> Tensor:
        # both ends included, as a DDPM training step would sample them
        return torch.randint(
            self.min_step, self.max_step + 1, [batch_size], dtype=torch.long, device=self.device
        )

    def sds_weight(self, t: Tensor) -> Float[Tensor, "B 1 1 1"]:
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        if self.cfg.weighting_strategy == "sds":
            return 1 - alpha_bar  # DreamFusion's sigma_t^2
        if self.cfg.weighting_strategy == "uniform":
            return torch.ones_like(alpha_bar)
        return alpha_bar**0.5 * (1 - alpha_bar)  # fantasia3d

    def text_embeddings(self, prompt_utils, elevation, azimuth, camera_distances):
        """``(embeddings, neg_guidance_weights)``: [cond; uncond] or, with Perp-Neg,
        [cond; uncond; neg1; neg2] and per-sample weights of the negative directions."""
        if getattr(prompt_utils, "use_perp_neg", False):
            return prompt_utils.get_text_embeddings_perp_neg(
                elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
            )
        embeddings = prompt_utils.get_text_embeddings(
            elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
        )
        return embeddings, None

    @staticmethod
    def item_embeddings(
        text_embeddings: Tensor, neg_guidance_weights: Optional[Tensor], b: int
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """The embeddings (and Perp-Neg weights) of batch item ``b`` alone."""
        if neg_guidance_weights is None:
            batch_size = text_embeddings.shape[0] // 2
            return text_embeddings[[b, batch_size + b]], None
        n_neg = neg_guidance_weights.shape[-1]
        batch_size = text_embeddings.shape[0] // (2 + n_neg)
        rows = [b, batch_size + b] + [2 * batch_size + b * n_neg + i for i in range(n_neg)]
        return text_embeddings[rows], neg_guidance_weights[b : b + 1]

    @staticmethod
    def guided_noise(
        predict: Callable[[Tensor, Tensor, Tensor], Tensor],
        noisy: Tensor,
        t: Tensor,
        text_embeddings: Tensor,
        neg_guidance_weights: Optional[Tensor],
        guidance_scale: float,
        cfg_form: str = "uncond",
    ) -> Dict[str, Tensor]:
        """Classifier-free guidance (``combine_cfg`` in ``cfg_form``). With Perp-Neg the
        negative prompts add their components perpendicular to ``cond - uncond`` and the result
        is ``uncond + s * (delta + accum)`` whatever ``cfg_form`` says, as published.
        ``predict(x, t, embeddings)`` runs the denoiser on a stacked batch."""
        batch_size = noisy.shape[0]
        noisy_in, t_in = [noisy, noisy], [t, t]
        if neg_guidance_weights is not None:
            # negative prompts are laid out per sample: [s0n1, s0n2, s1n1, s1n2, ...]
            n_neg = neg_guidance_weights.shape[-1]
            noisy_in.append(noisy.repeat_interleave(n_neg, dim=0))
            t_in.append(t.repeat_interleave(n_neg, dim=0))
        pred = predict(torch.cat(noisy_in, dim=0), torch.cat(t_in), text_embeddings)
        pred_cond = pred[:batch_size]
        pred_uncond = pred[batch_size : 2 * batch_size]
        if neg_guidance_weights is None:
            noise_pred = combine_cfg(pred_cond, pred_uncond, guidance_scale, cfg_form)
        else:
            delta = pred_cond - pred_uncond
            pred_neg = pred[2 * batch_size :]
            accum = torch.zeros_like(delta)
            for i in range(n_neg):
                delta_neg = pred_neg[i::n_neg] - pred_uncond
                accum = accum + neg_guidance_weights[:, i].view(-1, 1, 1, 1).to(
                    delta
                ) * perpendicular_component(delta_neg, delta)
            noise_pred = pred_uncond + guidance_scale * (delta + accum)
        return {
            "noise_pred": noise_pred,
            "noise_pred_cond": pred_cond,
            "noise_pred_uncond": pred_uncond,
        }

    def guided_predictor(
        self,
        predict: Callable[[Tensor, Tensor, Tensor], Tensor],
        text_embeddings: Tensor,
        neg_guidance_weights: Optional[Tensor],
        guidance_scale: Optional[float] = None,
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x_noisy, t) -> guided noise`` of the whole batch: ``guided_noise`` of the denoiser
        ``predict`` with these embeddings at ``guidance_scale`` (default ``cfg.guidance_scale``)
        in ``cfg.cfg_form``."""
        scale = self.cfg.guidance_scale if guidance_scale is None else guidance_scale

        def guided(x: Tensor, t: Tensor) -> Tensor:
            return self.guided_noise(
                predict,
                x,
                t,
                text_embeddings,
                neg_guidance_weights,
                scale,
                self.cfg.cfg_form,
            )["noise_pred"]

        return guided

    def item_guided_predictor(
        self,
        predict: Callable[[Tensor, Tensor, Tensor], Tensor],
        text_embeddings: Tensor,
        neg_guidance_weights: Optional[Tensor],
    ) -> Callable[[Tensor, Tensor, int], Tensor]:
        """``(x, t, b) -> guided noise`` of batch item ``b`` alone, as ``ddim_inspection``
        steps each item."""

        def guided(x: Tensor, t: Tensor, b: int) -> Tensor:
            embeddings, weights = self.item_embeddings(text_embeddings, neg_guidance_weights, b)
            return self.guided_noise(
                predict, x, t, embeddings, weights, self.cfg.guidance_scale, self.cfg.cfg_form
            )["noise_pred"]

        return guided

    @torch.no_grad()
    def noise_and_predict(
        self, x: Tensor, t: Tensor, guided_predict: Callable[[Tensor, Tensor], Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """The start of an SDS step: noise ``x`` to ``t`` with the training scheduler and
        predict that noise. Returns ``(noise, x_noisy, noise_pred)``."""
        noise = torch.randn_like(x)
        x_noisy = self.scheduler.add_noise(x, noise, t)
        return noise, x_noisy, guided_predict(x_noisy, t)

    def sds_loss(
        self, target_of: Tensor, grad: Tensor, name: str = "loss_sds", reduction: str = "sum"
    ) -> Dict[str, Tensor]:
        """Turn a gradient into a loss whose d/d(target_of) is ``grad`` (per sample, summed),
        so one backward pass serves every loss term of the system. ``reduction="mean"`` also
        divides by the number of elements (SDI's published loss, ``0.5 mean(grad^2) / B``)."""
        grad = torch.nan_to_num(grad)
        if self.grad_clip_val is not None:
            grad = grad.clamp(-self.grad_clip_val, self.grad_clip_val)
        target = (target_of - grad).detach()
        loss = 0.5 * F.mse_loss(target_of, target, reduction=reduction) / target_of.shape[0]
        return {name: loss, "grad_norm": grad.norm()}


class ImageEditMixin:
    """The call of the guidances that edit renders toward a prompt (InstructPix2Pix,
    ControlNet): with ``cfg.use_sds`` an SDS loss toward the edit, otherwise the edited images
    (noise to about ``t``, then ``cfg.diffusion_steps`` DDIM steps back to a clean image).
    Each method supplies its conditioned, guided denoiser through ``edit_predictor``."""

    def edit_predictor(
        self,
        cond_BCHW: Float[Tensor, "B 3 H W"],
        prompt_utils,
        cameras: Tuple[Tensor, Tensor, Tensor],
        latents: Float[Tensor, "B 4 h w"],
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x_noisy, t) -> guided noise`` conditioned on ``cond_BCHW`` and the prompt."""
        raise NotImplementedError

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
        # the latents only need a graph back to the render when an SDS loss uses them
        with torch.set_grad_enabled(self.cfg.use_sds and torch.is_grad_enabled()):
            latents = self.encode_images(rgb_BCHW)
        # image-editing systems may call a guidance without a camera
        zeros = torch.zeros(batch_size, device=rgb.device)
        cameras = tuple(
            zeros if value is None else value for value in (elevation, azimuth, camera_distances)
        )
        guided = self.edit_predictor(cond_BCHW, prompt_utils, cameras, latents)
        t = self.sample_timesteps(batch_size)

        if self.cfg.use_sds:
            # the SDS step toward the edit
            noise, _, noise_pred = self.noise_and_predict(latents, t, guided)
            grad = self.sds_weight(t) * (noise_pred - noise)
            out = self.sds_loss(latents, grad)
            out.update(self.step_summary(t))
            return out

        # editing: noise to (about) t, then DDIM back to a clean edited image
        with torch.no_grad():
            edited = ddim_edit(
                self.scheduler_ddim,
                self.scheduler,
                latents.detach(),
                int(t.max()),
                self.cfg.diffusion_steps,
                guided,
            )
            edit_images = self.decode_latents(edited)
        edit_images = F.interpolate(edit_images, (height, width), mode="bilinear")
        return {"edit_images": edit_images.permute(0, 2, 3, 1), "timestep": t.float().mean()}


def _square_size(size: Any) -> int:
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)


class VAELatentsMixin:
    """Encode renders into (and decode out of) a Stable-Diffusion-style VAE latent space.

    Sizes follow the diffusers pipelines: the UNet runs on ``unet.config.sample_size`` latents
    and renders are resized to that times the VAE's downsampling factor. (``vae.config.
    sample_size`` is not used: the published SD 2.1-base VAE says 768 where its UNet is trained
    on 64² latents of 512² images.) Tiny test models follow the same rule."""

    vae: Any
    unet: Any  # the denoiser whose sample size sets the latent size

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return _square_size(self.unet.config.sample_size)

    @property
    def image_size(self) -> int:
        return self.latent_size * self.vae_scale_factor

    def encode_images(self, imgs: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 4 h w"]:
        input_dtype = imgs.dtype
        imgs = imgs * 2.0 - 1.0
        posterior = self.vae.encode(imgs.to(self.vae.dtype)).latent_dist
        latents = posterior.sample() * self.vae.config.scaling_factor
        return latents.to(input_dtype)

    def decode_latents(self, latents: Float[Tensor, "B 4 h w"]) -> Float[Tensor, "B 3 H W"]:
        input_dtype = latents.dtype
        latents = latents / self.vae.config.scaling_factor
        image = self.vae.decode(latents.to(self.vae.dtype)).sample
        return (image * 0.5 + 0.5).clamp(0, 1).to(input_dtype)

    def render_to_latents(
        self, rgb: Float[Tensor, "B H W C"], rgb_as_latents: bool
    ) -> Dict[str, Optional[Tensor]]:
        rgb_BCHW = rgb.permute(0, 3, 1, 2)
        if rgb_as_latents:
            size = (self.latent_size, self.latent_size)
            latents = F.interpolate(rgb_BCHW, size, mode="bilinear", align_corners=False)
            return {"latents": latents, "image": None}
        size = (self.image_size, self.image_size)
        image = F.interpolate(rgb_BCHW, size, mode="bilinear", align_corners=False)
        return {"latents": self.encode_images(image), "image": image}


@torch.no_grad()
def ddim_inspection(
    scheduler,
    predict_guided: Callable[[Tensor, Tensor, int], Tensor],
    decode: Callable[[Tensor], Tensor],
    latents_noisy: Tensor,
    noise_pred: Tensor,
    t: Tensor,
    num_inference_steps: int = 50,
    max_items: int = 4,
) -> Dict[str, Any]:
    """Images for inspecting a guidance step: the noisy input, one DDIM step from it, the
    one-step estimate of x0 and a full DDIM denoise from ``t`` down to 0.

    ``predict_guided(x, t, b)`` returns the guided noise of batch item ``b`` at one timestep."""
    n = min(max_items, latents_noisy.shape[0])
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.to(latents_noisy.device)
    out: Dict[str, Any] = {"bs": n, "noise_levels": [], "imgs_noisy": [], "imgs_1step": []}
    out["imgs_1orig"], out["imgs_final"] = [], []
    alphas = scheduler.alphas_cumprod.to(latents_noisy.device)
    for b in range(n):
        t_b = t[b]
        out["noise_levels"].append(float(1 - alphas[t_b]))
        # start from the first DDIM timestep at or below t
        start = int((timesteps > t_b).sum())
        x = latents_noisy[b : b + 1]
        eps = noise_pred[b : b + 1]
        step = scheduler.step(eps, t_b, x, eta=0)
        out["imgs_noisy"].append(decode(x))
        out["imgs_1step"].append(decode(step.prev_sample))
        out["imgs_1orig"].append(decode(step.pred_original_sample))
        x = step.prev_sample
        for t_i in timesteps[start + 1 :]:
            eps = predict_guided(x, t_i.view(1), b)
            x = scheduler.step(eps, t_i, x, eta=0).prev_sample
        out["imgs_final"].append(decode(x))
    for key in ("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final"):
        out[key] = torch.cat(out[key], dim=0).permute(0, 2, 3, 1)
    return out


@torch.no_grad()
def ddim_edit(
    scheduler_ddim,
    scheduler,
    latents: Float[Tensor, "B C h w"],
    t_max: int,
    num_steps: int,
    predict_guided: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """SDEdit-style editing: noise ``latents`` to the first of ``num_steps`` DDIM timesteps at or
    below ``t_max``, then denoise with ``predict_guided(x, t_batch)`` down to a clean latent."""
    batch_size = latents.shape[0]
    scheduler_ddim.set_timesteps(num_steps)
    timesteps = scheduler_ddim.timesteps.to(latents.device)
    timesteps = timesteps[timesteps <= t_max]
    x = latents
    if len(timesteps) > 0:
        x = scheduler.add_noise(x, torch.randn_like(x), timesteps[:1].expand(batch_size))
    for t_i in timesteps:
        eps = predict_guided(x, t_i.expand(batch_size))
        x = scheduler_ddim.step(eps, t_i, x).prev_sample
    return x


# ---------- VSD's phi model: a camera-conditioned LoRA copy of the denoiser ----------

CAMERA_CONDITION_DIMS = {"extrinsics": 16, "mvp": 16, "spherical": 4}


def camera_condition(kind: str, batch: Dict[str, Any]) -> Float[Tensor, "B D"]:
    """The camera a phi model sees: ``extrinsics`` the flattened camera-to-world matrix,
    ``mvp`` the flattened MVP matrix, ``spherical`` (elevation in radians, sin and cos of the
    azimuth, camera distance)."""
    if kind == "spherical":
        elevation = torch.deg2rad(batch["elevation"])
        azimuth = torch.deg2rad(batch["azimuth"])
        return torch.stack(
            [elevation, torch.sin(azimuth), torch.cos(azimuth), batch["camera_distances"]], dim=-1
        )
    key = "c2w" if kind == "extrinsics" else "mvp_mtx"
    if key not in batch:
        raise ValueError(f"VSD guidance with camera condition '{kind}' needs '{key}' in the batch")
    return batch[key].reshape(batch[key].shape[0], -1)


def add_camera_lora(
    unet: Any, camera_dim: Optional[int], lora_rank: Optional[int]
) -> Tuple[nn.ModuleList, Optional[nn.Module]]:
    """Turn the frozen ``unet`` into a phi model: a camera embedding (``camera_dim`` inputs to
    the time-embedding width) as its class embedding, and LoRA adapters (alpha = rank, so a
    scale of 1) on the attention projections. ``None`` leaves either out. Returns the
    trainable parts, in float32: ``(lora_layers, camera_embedding)``."""
    from diffusers.models.embeddings import TimestepEmbedding

    camera_embedding = None
    if camera_dim is not None:
        time_embed_dim = unet.config.block_out_channels[0] * 4
        unet.class_embedding = TimestepEmbedding(camera_dim, time_embed_dim)
        camera_embedding = unet.class_embedding.float()
    lora_modules = []
    if lora_rank:
        from peft import LoraConfig

        unet.add_adapter(
            LoraConfig(
                r=lora_rank,
                lora_alpha=lora_rank,
                init_lora_weights="gaussian",
                target_modules=["to_k", "to_q", "to_v", "to_out.0"],
            )
        )
        for module in unet.modules():
            if hasattr(module, "lora_A") and hasattr(module, "lora_B"):
                lora_modules += [module.lora_A, module.lora_B]
    # (after add_adapter, which freezes everything but the adapters)
    lora_layers = nn.ModuleList(lora_modules).float().requires_grad_(True)
    if camera_embedding is not None:
        camera_embedding.requires_grad_(True)
    return lora_layers, camera_embedding


def phi_denoising_loss(
    run_phi: Callable[[Tensor, Tensor, Tensor, Optional[Tensor]], Tensor],
    scheduler: Any,
    latents: Float[Tensor, "B 4 h w"],
    text_cond: Float[Tensor, "B N Nf"],
    camera: Optional[Float[Tensor, "B D"]],
    n_timestep_samples: int,
    camera_dropout: bool,
) -> Tensor:
    """The phi model's denoising loss on the current (detached) renders, at
    ``n_timestep_samples`` uniform timesteps per latent, in the model's own parametrisation.
    ``camera_dropout``: a zero camera 10% of the time (drawn with Python's generator, as
    established). ``run_phi(x, t, embeddings, camera)`` returns the raw prediction."""
    batch_size = latents.shape[0]
    n = n_timestep_samples
    latents = latents.detach().repeat(n, 1, 1, 1)
    t = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        [batch_size * n],
        dtype=torch.long,
        device=latents.device,
    )
    noise = torch.randn_like(latents)
    latents_noisy = scheduler.add_noise(latents, noise, t)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    if camera is not None and camera_dropout and random.random() < 0.1:
        camera = torch.zeros_like(camera)
    pred = run_phi(
        latents_noisy, t, text_cond.repeat(n, 1, 1), None if camera is None else camera.repeat(n, 1)
    )
    return F.mse_loss(pred.float(), target.float(), reduction="mean")
