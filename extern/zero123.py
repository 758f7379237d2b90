"""Zero-1-to-3 (and Stable Zero123) as diffusers-style components.

A Zero-1-to-3 model is a latent diffusion UNet whose input is the noisy latent concatenated with
the VAE latent of the conditioning image (8 channels), cross-attending to one token: the CLIP
image embedding of the conditioning image joined with a 4-d relative camera and mapped to the
cross-attention width by ``cc_projection``.

Folder layout (``Zero123Pipeline.save_pretrained`` / ``from_pretrained``)::

    unet/  vae/  image_encoder/  cc_projection/  scheduler/

which ``scripts/convert_zero123.py`` writes. The public diffusers ports that threestudio's
configs name (``bennyguo/zero123-diffusers``, ``bennyguo/zero123-xl-diffusers``) keep the same
linear layer in ``clip_camera_projection/`` instead (config ``embedding_dim`` /
``additional_embeddings``, weights ``proj.*``); ``from_pretrained`` reads either.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPVisionModelWithProjection

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CCProjection(ModelMixin, ConfigMixin):
    """[CLIP image embedding, 4 camera numbers] -> cross-attention width (one linear layer)."""

    @register_to_config
    def __init__(self, in_channel: int = 772, out_channel: int = 768):
        super().__init__()
        self.projection = nn.Linear(in_channel, out_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class CLIPCameraProjection(ModelMixin, ConfigMixin):
    """The same projection in the diffusers ports' layout: ``embedding_dim`` + the
    ``additional_embeddings`` camera numbers -> ``embedding_dim``."""

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4):
        super().__init__()
        self.proj = nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def load_rgba_image(path: str, size: int) -> torch.Tensor:
    """An image file as [1, 3, size, size] in [0, 1], transparent parts composited on white."""
    import numpy as np
    from PIL import Image

    image = Image.open(path).convert("RGBA").resize((size, size), Image.BICUBIC)
    rgba = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    rgb = rgb * alpha + (1 - alpha)
    return rgb.permute(2, 0, 1)[None].contiguous()


class Zero123Pipeline:
    """The parts of a Zero-1-to-3 model, with the conditioning maths and a DDIM sampler."""

    components = ("unet", "vae", "image_encoder", "cc_projection", "scheduler")

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        image_encoder: CLIPVisionModelWithProjection,
        cc_projection: CCProjection,
        scheduler: DDPMScheduler,
    ):
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.cc_projection, self.scheduler = cc_projection, scheduler

    @classmethod
    def component_classes(cls):
        return {
            "unet": UNet2DConditionModel,
            "vae": AutoencoderKL,
            "image_encoder": CLIPVisionModelWithProjection,
            "cc_projection": CCProjection,
            "scheduler": DDPMScheduler,
        }

    @classmethod
    def from_pretrained(cls, path: str, torch_dtype: torch.dtype = torch.float32, loader=None):
        """Load every part from ``path``/<part>; ``loader(cls, path, subfolder=, **kw)`` may
        replace ``cls.from_pretrained`` (threestudio passes its offline-aware loader)."""
        loader = loader or (lambda c, p, **kw: c.from_pretrained(p, **kw))
        parts = {}
        for name, part_cls in cls.component_classes().items():
            kwargs = {"subfolder": name}
            if name != "scheduler":
                kwargs["torch_dtype"] = torch_dtype
            if name == "cc_projection":
                parts[name] = cls._load_projection(loader, str(path), kwargs)
            else:
                parts[name] = loader(part_cls, str(path), **kwargs)
        return cls(**parts)

    @staticmethod
    def _load_projection(loader, path: str, kwargs: dict):
        """``cc_projection/`` or, in the diffusers ports, ``clip_camera_projection/``: a local
        folder says which it has; a hub id is tried with ``cc_projection`` first."""
        port = dict(kwargs, subfolder="clip_camera_projection")
        if Path(path).is_dir():
            if (
                not (Path(path) / "cc_projection").is_dir()
                and (Path(path) / "clip_camera_projection").is_dir()
            ):
                return loader(CLIPCameraProjection, path, **port)
            return loader(CCProjection, path, **kwargs)
        try:
            return loader(CCProjection, path, **kwargs)
        except Exception as first:
            try:
                return loader(CLIPCameraProjection, path, **port)
            except Exception:
                raise first from None

    def save_pretrained(self, path: str) -> None:
        for name in self.components:
            part = getattr(self, name)
            folder = name
            if isinstance(part, CLIPCameraProjection):
                folder = "clip_camera_projection"  # kept in the layout it was read from
            part.save_pretrained(Path(path) / folder)

    def to(self, device=None, dtype=None):
        for name in ("unet", "vae", "image_encoder", "cc_projection"):
            part = getattr(self, name)
            part.to(device) if dtype is None else part.to(device, dtype)
        return self

    @property
    def image_size(self) -> int:
        size = self.vae.config.sample_size
        return size[0] if isinstance(size, (list, tuple)) else int(size)

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode_image_clip(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> CLIP image embedding [B, 1, D]."""
        size = self.image_encoder.config.image_size
        x = F.interpolate(images, (size, size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / std
        embeds = self.image_encoder(x.to(self.image_encoder.dtype)).image_embeds
        return embeds[:, None, :]

    def encode_image_concat(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> the VAE latent mode, unscaled (Zero-1-to-3's c_concat)."""
        x = F.interpolate(images, (self.image_size,) * 2, mode="bilinear", align_corners=False)
        x = (x * 2 - 1).to(self.vae.dtype)
        return self.vae.encode(x).latent_dist.mode()

    def cross_attention_states(
        self, clip_embeds: torch.Tensor, camera: torch.Tensor
    ) -> torch.Tensor:
        """CLIP embedding [1 or B, 1, D] and camera [B, 4] -> one token [B, 1, C]."""
        clip_embeds = clip_embeds.expand(camera.shape[0], -1, -1)
        joined = torch.cat([clip_embeds, camera[:, None, :].to(clip_embeds)], dim=-1)
        return self.cc_projection(joined.to(self.cc_projection.dtype))

    def predict_noise(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        cross_attention: torch.Tensor,
        concat_latents: torch.Tensor,
    ) -> torch.Tensor:
        x = torch.cat([latents, concat_latents.expand(latents.shape[0], -1, -1, -1)], dim=1)
        dtype = self.unet.dtype
        return self.unet(x.to(dtype), t, encoder_hidden_states=cross_attention.to(dtype)).sample.to(
            latents.dtype
        )

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        camera: torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        generator=None,
    ) -> torch.Tensor:
        """Novel views of ``image`` ([1, 3, H, W] in [0, 1]) at relative cameras [B, 4]:
        images [B, 3, H, W] in [0, 1]."""
        batch_size = camera.shape[0]
        clip = self.encode_image_clip(image)
        cond = self.cross_attention_states(clip, camera)
        concat = self.encode_image_concat(image)
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_inference_steps)
        shape = (batch_size, self.unet.config.out_channels, self.latent_size, self.latent_size)
        device = self.unet.device
        latents = torch.randn(shape, generator=generator, device=device)
        for t in scheduler.timesteps:
            t_in = torch.full([2 * batch_size], int(t), device=device)
            pred = self.predict_noise(
                torch.cat([latents] * 2),
                t_in,
                torch.cat([cond, torch.zeros_like(cond)]),
                torch.cat(
                    [
                        concat.expand(batch_size, -1, -1, -1),
                        torch.zeros_like(concat).expand(batch_size, -1, -1, -1),
                    ]
                ),
            )
            pred_cond, pred_uncond = pred.chunk(2)
            eps = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (images * 0.5 + 0.5).clamp(0, 1)
