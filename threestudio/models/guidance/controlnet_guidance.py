from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.controlnets.controlnet import ControlNetModel

import threestudio
from threestudio.models.guidance.base import (
    DiffusionGuidanceConfig,
    DiffusionGuidanceMixin,
    ImageEditMixin,
    SpeedupConfig,
    VAELatentsMixin,
    _load_pretrained,
    ddim_scheduler,
    freeze,
    load_scheduler,
    load_unet_and_vae,
    place_models,
    weights_dtype,
)
from threestudio.utils.base import BaseObject
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Float, Optional, Tensor

DEFAULT_CONTROLNETS = {
    "normal": "lllyasviel/control_v11p_sd15_normalbae",
    "input_normal": "lllyasviel/control_v11p_sd15_normalbae",
    "canny": "lllyasviel/control_v11p_sd15_canny",
}


def canny_edges(images: Float[Tensor, "B 3 H W"], low: float, high: float) -> Tensor:
    """Edge map [B, 3, H, W] in {0, 1} in the spirit of Canny, in PyTorch (no OpenCV): blur,
    Sobel magnitude on the 0-255 scale, thin to local maxima along the gradient direction, and
    keep weak edges (>= low) only next to strong ones (>= high)."""
    gray = (images * 255).mul(
        torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
    )
    gray = gray.sum(dim=1, keepdim=True)
    g = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=images.device)
    blur = (g[:, None] * g[None, :] / 256.0).view(1, 1, 5, 5)
    gray = F.conv2d(F.pad(gray, (2, 2, 2, 2), mode="replicate"), blur)
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=images.device)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel_x.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel_x.t().reshape(1, 1, 3, 3))
    magnitude = torch.sqrt(gx**2 + gy**2)
    # non-maximum suppression along the gradient, quantised to horizontal/vertical/diagonals
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    sector = ((angle + 22.5) // 45).long() % 4  # 0: x, 1: diagonal, 2: y, 3: anti-diagonal
    shifts = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    is_max = torch.zeros_like(magnitude, dtype=torch.bool)
    for k, (a, b) in enumerate(shifts):
        n1 = torch.roll(magnitude, shifts=a, dims=(2, 3))
        n2 = torch.roll(magnitude, shifts=b, dims=(2, 3))
        is_max |= (sector == k) & (magnitude >= n1) & (magnitude >= n2)
    thin = magnitude * is_max
    strong = thin >= high
    weak = thin >= low
    near_strong = F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0
    edges = (strong | (weak & near_strong)).float()
    return edges.expand(-1, 3, -1, -1)


@threestudio.register("stable-diffusion-controlnet-guidance")
class ControlNetGuidance(ImageEditMixin, DiffusionGuidanceMixin, VAELatentsMixin, BaseObject):
    """Stable Diffusion steered by a ControlNet on a control image derived from ``cond_rgb``
    (normals or edges); returns edited images or, with ``use_sds``, an SDS loss."""

    @dataclass
    class Config(BaseObject.Config, DiffusionGuidanceConfig, SpeedupConfig):
        pretrained_model_name_or_path: str = "SG161222/Realistic_Vision_V2.0"
        # None: lllyasviel/control_v11p_sd15_normalbae (normal types) or ..._sd15_canny
        controlnet_name_or_path: Optional[str] = None
        ddim_scheduler_name_or_path: Optional[str] = None  # None: from the model's scheduler
        cache_dir: Optional[str] = None  # passed to from_pretrained
        # normal (estimated with controlnet_aux's NormalBae) | input_normal (cond_rgb is a normal
        # map) | canny (edges of cond_rgb)
        control_type: str = "normal"
        guidance_scale: float = 7.5
        condition_scale: float = 1.5  # ControlNet residual scale
        fixed_size: int = -1  # > 0: resize renders to this square size; else keep (multiple of 8)
        diffusion_steps: int = 20  # DDIM steps of the full range (those at or below t run)
        use_sds: bool = False  # return loss_sds instead of edit_images
        # hysteresis thresholds of the Canny edges, on the 0-255 gradient scale
        canny_lower_bound: int = 50
        canny_upper_bound: int = 100  # see canny_lower_bound

    cfg: Config

    def configure(self) -> None:
        if self.cfg.control_type not in DEFAULT_CONTROLNETS:
            raise ConfigError(
                f"control_type '{self.cfg.control_type}' is unknown; use one of "
                f"{', '.join(DEFAULT_CONTROLNETS)}"
            )
        threestudio.info("Loading ControlNet ...")
        self.weights_dtype = weights_dtype(self.cfg.half_precision_weights, self.device)
        name = self.cfg.pretrained_model_name_or_path
        self.unet, self.vae = load_unet_and_vae(name, self.weights_dtype, self.cfg.cache_dir)
        load = {"torch_dtype": self.weights_dtype, "cache_dir": self.cfg.cache_dir}
        controlnet_name = (
            self.cfg.controlnet_name_or_path or DEFAULT_CONTROLNETS[self.cfg.control_type]
        )
        self.controlnet = freeze(_load_pretrained(ControlNetModel, controlnet_name, **load))
        place_models(self.cfg, self.device, [self.unet, self.controlnet], [self.vae])
        self.scheduler = load_scheduler(name, self.cfg.cache_dir)
        self.scheduler_ddim = ddim_scheduler(
            self.scheduler, self.cfg.ddim_scheduler_name_or_path, self.cfg.cache_dir
        )
        self.setup_schedule(self.scheduler)
        self.normal_detector = None
        if self.cfg.control_type == "normal":
            try:
                from controlnet_aux import NormalBaeDetector
            except ImportError:
                raise ConfigError(
                    "control_type 'normal' estimates normals with controlnet_aux, which is not "
                    "installed; pip install controlnet_aux, or use control_type=input_normal "
                    "with rendered normals as cond_rgb"
                ) from None
            self.normal_detector = _load_pretrained(NormalBaeDetector, "lllyasviel/Annotators")
        threestudio.info("Loaded ControlNet!")

    @torch.no_grad()
    def control_image(self, cond_rgb: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
        if self.cfg.control_type == "input_normal":
            return cond_rgb  # already a normal map in [0, 1]
        if self.cfg.control_type == "canny":
            return canny_edges(
                cond_rgb, float(self.cfg.canny_lower_bound), float(self.cfg.canny_upper_bound)
            )
        import numpy as np
        from PIL import Image

        maps = []
        for image in cond_rgb:
            array = (image.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
            detected = self.normal_detector(Image.fromarray(array))
            detected = detected.resize(array.shape[1::-1])
            maps.append(torch.from_numpy(np.asarray(detected, dtype=np.float32) / 255.0))
        return torch.stack(maps).permute(0, 3, 1, 2).to(cond_rgb)

    def predict_noise(self, latents: Tensor, t: Tensor, embeddings: Tensor, control: Tensor):
        """Denoiser with ControlNet residuals; ``control`` matches ``latents`` row by row."""
        control = control.to(self.weights_dtype)
        x = latents.to(self.weights_dtype)
        t = t.to(self.weights_dtype)
        embeddings = embeddings.to(self.weights_dtype)
        down, mid = self.controlnet(
            x,
            t,
            encoder_hidden_states=embeddings,
            controlnet_cond=control,
            conditioning_scale=self.cfg.condition_scale,
            return_dict=False,
        )
        return self.unet(
            x,
            t,
            encoder_hidden_states=embeddings,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample.to(latents.dtype)

    def edit_predictor(self, cond_BCHW, prompt_utils, cameras, latents):
        control = self.control_image(cond_BCHW)
        text_embeddings, neg_weights = self.text_embeddings(prompt_utils, *cameras)
        batch_size = latents.shape[0]

        def predict(x: Tensor, t_in: Tensor, embeddings: Tensor) -> Tensor:
            # rows as guided_noise stacks them: cond, uncond, then each sample's negatives
            rows = [control, control]
            if x.shape[0] > 2 * batch_size:
                n_neg = (x.shape[0] - 2 * batch_size) // batch_size
                rows.append(control.repeat_interleave(n_neg, dim=0))
            return self.predict_noise(x, t_in, embeddings, torch.cat(rows))

        return self.guided_predictor(predict, text_embeddings, neg_weights)
