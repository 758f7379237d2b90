import os

import pytest
import torch

import threestudio
from threestudio.models.guidance.controlnet_guidance import canny_edges
from threestudio.utils.errors import ConfigError

B = 2


def make_guidance(path, **cfg):
    return threestudio.find("stable-diffusion-controlnet-guidance")(
        {
            "pretrained_model_name_or_path": path,
            "controlnet_name_or_path": os.path.join(path, "controlnet"),
            "half_precision_weights": False,
            "control_type": "input_normal",
            **cfg,
        }
    )


def test_sds_gradient_with_controlnet_residuals(tiny_controlnet_path, prompt_utils):
    guidance = make_guidance(tiny_controlnet_path, use_sds=True, guidance_scale=4.0)
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(B, 16, 16, 3, generator=gen, requires_grad=True)
    normals = torch.rand(B, 16, 16, 3, generator=gen)
    torch.manual_seed(0)
    guidance(rgb, normals, prompt_utils)["loss_sds"].backward()

    vae, unet, controlnet = guidance.vae, guidance.unet, guidance.controlnet
    torch.manual_seed(0)
    x = rgb.detach().clone().requires_grad_(True)
    latents = vae.encode(x.permute(0, 3, 1, 2) * 2 - 1).latent_dist.sample() * 0.18215
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [B])
    noise = torch.randn_like(latents)
    with torch.no_grad():
        a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        control = normals.permute(0, 3, 1, 2)

        def eps(text):
            text = text.expand(B, -1, -1)
            down, mid = controlnet(
                noisy, t, text, controlnet_cond=control, conditioning_scale=1.5, return_dict=False
            )
            out = unet(
                noisy,
                t,
                text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            )
            return out.sample

        cond, uncond = eps(prompt_utils.cond), eps(prompt_utils.uncond)
        expected = (1 - a) * (uncond + 4.0 * (cond - uncond) - noise)
        # the control image matters: without residuals the prediction differs
        plain = unet(noisy, t, prompt_utils.cond.expand(B, -1, -1)).sample
        assert (plain - cond).abs().max() > 1e-4
    (latents * expected / B).sum().backward()
    torch.testing.assert_close(rgb.grad, x.grad, rtol=1e-3, atol=1e-6)


def test_edit_images_and_config_errors(tiny_controlnet_path, prompt_utils):
    guidance = make_guidance(tiny_controlnet_path, control_type="canny", diffusion_steps=3)
    rgb = torch.rand(B, 16, 16, 3)
    edit = guidance(rgb, rgb, prompt_utils)["edit_images"]
    assert edit.shape == rgb.shape and 0 <= float(edit.min()) and float(edit.max()) <= 1
    with pytest.raises(ConfigError, match="control_type 'depth'"):
        make_guidance(tiny_controlnet_path, control_type="depth")
    try:
        import controlnet_aux  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="input_normal"):
            make_guidance(tiny_controlnet_path, control_type="normal")


def test_canny_edges_follow_a_square_outline():
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, 8:24, 8:24] = 1.0
    edges = canny_edges(image, 50.0, 100.0)[0, 0]
    assert edges.shape == (32, 32)
    assert edges[12:20, 12:20].sum() == 0 and edges[:4].sum() == 0  # flat regions
    for row in range(10, 22):  # every row crossing the square has an edge near both sides
        assert edges[row, 6:11].sum() >= 1 and edges[row, 21:26].sum() >= 1
    assert edges.sum() < 4 * 16 * 3  # thin: a few pixels across, not a thick band
