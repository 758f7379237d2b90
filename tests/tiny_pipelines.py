"""Builders of tiny random diffusion pipelines saved in the folder layout of the real ones.

Each builder writes ``save_pretrained`` folders into ``root`` and returns the path, so tests load
them through the same ``from_pretrained`` code path as real checkpoints (with HF_HUB_OFFLINE=1).
"""

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

CROSS_ATTENTION_DIM = 32


def tiny_unet(
    in_channels: int = 4,
    out_channels: int = 4,
    sample_size: int = 8,
    cross_attention_dim: int = CROSS_ATTENTION_DIM,
    **kwargs,
) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
        **kwargs,
    )


def tiny_vae(sample_size: int = 16) -> AutoencoderKL:
    # two blocks: one downsampling by 2, so a 16x16 image gives an 8x8 latent
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
    )


def tiny_scheduler(**kwargs) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        **kwargs,
    )


def build_tiny_sd(root: Path, seed: int = 0, vae_sample_size: int = 16, **unet_kwargs) -> str:
    """A Stable-Diffusion-style folder: unet/, vae/, scheduler/.

    ``vae_sample_size`` is only a config entry (the VAE is convolutional); the published SD 2.1-base
    folder says 768 there while its UNet runs on 64² latents of 512² images, which a tiny folder
    mirrors with ``vae_sample_size=24`` (UNet 8² latents, 16² images)."""
    torch.manual_seed(seed)
    root = Path(root)
    tiny_unet(**unet_kwargs).save_pretrained(root / "unet")
    tiny_vae(sample_size=vae_sample_size).save_pretrained(root / "vae")
    tiny_scheduler().save_pretrained(root / "scheduler")
    return str(root)


def build_tiny_ip2p(root: Path, seed: int = 0) -> str:
    """An InstructPix2Pix-style folder: the UNet also sees the image latent (8 channels)."""
    return build_tiny_sd(root, seed=seed, in_channels=8)


def build_tiny_controlnet(root: Path, seed: int = 0) -> str:
    """A Stable-Diffusion folder plus ``controlnet/`` (control images at the VAE input size)."""
    from diffusers.models.controlnets.controlnet import ControlNetModel

    build_tiny_sd(root, seed=seed)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel.from_pretrained(Path(root) / "unet")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    # a fresh ControlNet has zero output convolutions; randomise them so residuals matter
    for name, param in controlnet.named_parameters():
        if (
            "zero_conv" in name
            or "controlnet_down_blocks" in name
            or "controlnet_mid_block" in name
        ):
            torch.nn.init.normal_(param, std=0.02)
    controlnet.save_pretrained(Path(root) / "controlnet")
    return str(root)


def build_tiny_if(root: Path, seed: int = 0) -> str:
    """A DeepFloyd-IF-stage-I-style folder: a pixel UNet predicting noise and variance."""
    torch.manual_seed(seed)
    root = Path(root)
    tiny_unet(in_channels=3, out_channels=6).save_pretrained(root / "unet")
    DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range"
    ).save_pretrained(root / "scheduler")
    return str(root)


def build_tiny_zero123(root: Path, seed: int = 0) -> str:
    """A Zero-1-to-3 folder in the layout of ``extern.zero123.Zero123Pipeline``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from extern.zero123 import CCProjection, Zero123Pipeline

    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=16,
            patch_size=8,
            projection_dim=CROSS_ATTENTION_DIM,
        )
    )
    pipe = Zero123Pipeline(
        unet=tiny_unet(in_channels=8),
        vae=tiny_vae(),
        image_encoder=image_encoder,
        cc_projection=CCProjection(CROSS_ATTENTION_DIM + 4, CROSS_ATTENTION_DIM),
        scheduler=tiny_scheduler(),
    )
    pipe.save_pretrained(root)
    return str(root)


def build_tiny_controlnet_model(root: Path, seed: int = 0) -> str:
    """The ``controlnet/`` folder of ``build_tiny_controlnet`` on its own (for configs that name
    the ControlNet apart from the Stable Diffusion folder: ``controlnet_name_or_path``)."""
    return str(Path(build_tiny_controlnet(root, seed=seed)) / "controlnet")
