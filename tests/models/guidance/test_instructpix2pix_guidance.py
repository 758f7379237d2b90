import torch

import threestudio

B = 2


def make_guidance(path, **cfg):
    return threestudio.find("stable-diffusion-instructpix2pix-guidance")(
        {"pretrained_model_name_or_path": path, "half_precision_weights": False, **cfg}
    )


def test_sds_gradient_mixes_text_and_image_guidance(tiny_ip2p_path, prompt_utils):
    guidance = make_guidance(tiny_ip2p_path, use_sds=True, guidance_scale=5.0, condition_scale=2.0)
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(B, 16, 16, 3, generator=gen, requires_grad=True)
    cond_rgb = torch.rand(B, 16, 16, 3, generator=gen)
    torch.manual_seed(0)
    out = guidance(rgb, cond_rgb, prompt_utils)
    out["loss_sds"].backward()

    vae, unet = guidance.vae, guidance.unet
    torch.manual_seed(0)
    with torch.no_grad():
        image = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
        latents = vae.encode(image).latent_dist.sample() * vae.config.scaling_factor
        cond = vae.encode(cond_rgb.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mode()
        t = torch.randint(guidance.min_step, guidance.max_step + 1, [B])
        noise = torch.randn_like(latents)
        a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise

        def eps(image_latents, text):
            x = torch.cat([noisy, image_latents], dim=1)
            return unet(x, t, encoder_hidden_states=text.expand(B, -1, -1)).sample

        e_both = eps(cond, prompt_utils.cond)
        e_image = eps(cond, prompt_utils.uncond)
        e_none = eps(torch.zeros_like(cond), prompt_utils.uncond)
        expected = (1 - a) * (e_none + 5.0 * (e_both - e_image) + 2.0 * (e_image - e_none) - noise)

    # recompute d loss / d rgb through the encoder with the same posterior sample
    torch.manual_seed(0)
    x = rgb.detach().clone().requires_grad_(True)
    lat = vae.encode(x.permute(0, 3, 1, 2) * 2 - 1).latent_dist.sample() * vae.config.scaling_factor
    (lat * expected / B).sum().backward()
    torch.testing.assert_close(rgb.grad, x.grad, rtol=1e-3, atol=1e-6)


def test_edit_images_are_images_of_the_render_size(tiny_ip2p_path, prompt_utils):
    guidance = make_guidance(tiny_ip2p_path, diffusion_steps=4, min_step_percent=0.5)
    rgb = torch.rand(B, 20, 18, 3)
    out = guidance(rgb, rgb, prompt_utils)
    edit = out["edit_images"]
    assert edit.shape == rgb.shape
    assert 0 <= float(edit.min()) and float(edit.max()) <= 1
    assert (edit - rgb).abs().mean() > 1e-3  # the random model does change the image
    fixed = make_guidance(tiny_ip2p_path, diffusion_steps=2, fixed_size=16)
    assert fixed(rgb, rgb, prompt_utils)["edit_images"].shape == rgb.shape
