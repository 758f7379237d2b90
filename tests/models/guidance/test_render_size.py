"""Render size into the VAE: ``unet.config.sample_size`` times the VAE's downsampling factor, as
the diffusers pipelines do, whatever ``vae.config.sample_size`` says. The published SD 2.1-base
folder says 768 for the VAE and 64 for the UNet (512² renders, 64² latents); the tiny folder here
mirrors that mismatch at 24 / 8 with a 2x VAE (16² renders, 8² latents)."""

import pytest
import torch
from tiny_pipelines import build_tiny_sd

import threestudio

B = 2


@pytest.fixture(scope="module")
def mismatched_sd_path(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_vae24"), vae_sample_size=24)


def record_unet_inputs(unet):
    shapes = []
    unet.register_forward_hook(lambda module, args, output: shapes.append(tuple(args[0].shape)))
    return shapes


def record_vae_inputs(vae):
    shapes = []
    encode = vae.encode

    def wrapped(x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return encode(x, *args, **kwargs)

    vae.encode = wrapped
    return shapes


def cameras():
    zeros = torch.zeros(B)
    return {"elevation": zeros, "azimuth": zeros, "camera_distances": zeros + 1.5}


@pytest.mark.parametrize("use_img_loss", [False, True])
def test_sd_resizes_renders_to_unet_size_times_vae_factor(
    mismatched_sd_path, prompt_utils, use_img_loss
):
    guidance = threestudio.find("stable-diffusion-guidance")(
        {
            "pretrained_model_name_or_path": mismatched_sd_path,
            "half_precision_weights": False,
            "use_img_loss": use_img_loss,
        }
    )
    assert guidance.vae.config.sample_size == 24 and guidance.unet.config.sample_size == 8
    assert (guidance.image_size, guidance.latent_size) == (16, 8)
    unet_shapes = record_unet_inputs(guidance.unet)
    vae_shapes = record_vae_inputs(guidance.vae)
    rgb = torch.rand(B, 40, 40, 3, requires_grad=True)
    out = guidance(rgb, prompt_utils, **cameras())
    assert vae_shapes == [(B, 3, 16, 16)]
    assert unet_shapes and all(shape[-2:] == (8, 8) for shape in unet_shapes)
    if use_img_loss:
        out["loss_sds_img"].backward()  # the image loss lives on the 16² resized render
        assert rgb.grad.abs().sum() > 0

    unet_shapes.clear()
    latents = torch.randn(B, 12, 12, 4)
    guidance(latents, prompt_utils, **cameras(), rgb_as_latents=True)
    assert unet_shapes and all(shape[-2:] == (8, 8) for shape in unet_shapes)


def test_vsd_resizes_renders_to_unet_size_times_vae_factor(mismatched_sd_path, prompt_utils):
    guidance = threestudio.find("stable-diffusion-vsd-guidance")(
        {
            "pretrained_model_name_or_path": mismatched_sd_path,
            "pretrained_model_name_or_path_lora": mismatched_sd_path,
            "half_precision_weights": False,
        }
    )
    assert (guidance.image_size, guidance.latent_size) == (16, 8)
    unet_shapes = record_unet_inputs(guidance.frozen.unet)
    lora_shapes = record_unet_inputs(guidance.frozen.unet_lora)
    vae_shapes = record_vae_inputs(guidance.vae)
    guidance(torch.rand(B, 40, 40, 3), prompt_utils, **cameras(), c2w=torch.randn(B, 4, 4))
    assert vae_shapes == [(B, 3, 16, 16)]
    for shapes in (unet_shapes, lora_shapes):
        assert shapes and all(shape[-2:] == (8, 8) for shape in shapes)
