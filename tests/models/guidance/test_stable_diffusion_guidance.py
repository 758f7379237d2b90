import pytest
import torch

import threestudio
from threestudio.utils.errors import ConfigError, MissingModelError
from threestudio.utils.misc import C

B = 2


def make_guidance(path, **cfg):
    return threestudio.find("stable-diffusion-guidance")(
        {"pretrained_model_name_or_path": path, "half_precision_weights": False, **cfg}
    )


def cameras(batch_size=B):
    zeros = torch.zeros(batch_size)
    return {"elevation": zeros, "azimuth": zeros, "camera_distances": zeros + 1.5}


def run_on_latents(guidance, prompt_utils, latents, seed=0, **kwargs):
    """Call the guidance on a leaf latent (rgb_as_latents) and return (out, d loss/d latents)."""
    latents = latents.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = guidance(
        latents.permute(0, 2, 3, 1),
        prompt_utils,
        **cameras(latents.shape[0]),
        rgb_as_latents=True,
        **kwargs,
    )
    out["loss_sds"].backward()
    return out, latents.grad


def replay_noise(guidance, latents, seed=0):
    """The timesteps and noise a call with ``seed`` draws (same order as the guidance)."""
    torch.manual_seed(seed)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [latents.shape[0]])
    noise = torch.randn_like(latents)
    return t, noise


def unet_eps(guidance, x, t, prompt_utils):
    with torch.no_grad():
        cond = guidance.unet(x, t, encoder_hidden_states=prompt_utils.cond.expand(len(x), -1, -1))
        uncond = guidance.unet(
            x, t, encoder_hidden_states=prompt_utils.uncond.expand(len(x), -1, -1)
        )
    return cond.sample, uncond.sample


@pytest.fixture(scope="module")
def latents():
    return torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def test_sds_gradient_matches_hand_computation(tiny_sd_path, prompt_utils, latents):
    guidance = make_guidance(tiny_sd_path, guidance_scale=7.5)
    out, grad = run_on_latents(guidance, prompt_utils, latents)
    t, noise = replay_noise(guidance, latents)
    assert out["timestep"].ndim == 0 and float(out["timestep"]) == float(t.float().mean())

    alpha_bar = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    cond, uncond = unet_eps(guidance, noisy, t, prompt_utils)
    # the established SDS form: cond + s (cond - uncond)
    expected = (1 - alpha_bar) * (cond + 7.5 * (cond - uncond) - noise)
    # loss = 0.5 * |x - (x - g)|^2 / B  =>  d loss / dx = g / B
    # float32 sums in the perpendicular projection change with the thread count (~2e-5)
    torch.testing.assert_close(grad * B, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["grad_norm"], expected.norm(), rtol=1e-4, atol=1e-5)
    assert out["min_step"] == 20 and out["max_step"] == 980


def test_guidance_scale_is_linear_in_cfg_direction(tiny_sd_path, prompt_utils, latents):
    grads = {}
    for scale in (1.0, 2.0, 5.0):
        guidance = make_guidance(tiny_sd_path, guidance_scale=scale)
        grads[scale] = run_on_latents(guidance, prompt_utils, latents)[1]
    t, noise = replay_noise(guidance, latents)
    alpha_bar = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    cond, uncond = unet_eps(guidance, noisy, t, prompt_utils)
    # cond + s (cond - uncond): scale 1 is 2 cond - uncond; each extra unit adds w (cond - uncond)
    torch.testing.assert_close(
        grads[1.0] * B, (1 - alpha_bar) * (2 * cond - uncond - noise), atol=1e-5, rtol=1e-4
    )
    step = (grads[2.0] - grads[1.0]) * B
    torch.testing.assert_close(step, (1 - alpha_bar) * (cond - uncond), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        grads[5.0] - grads[1.0], 4 * (grads[2.0] - grads[1.0]), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("strategy", ["sds", "uniform", "fantasia3d"])
def test_weighting_strategies(tiny_sd_path, prompt_utils, latents, strategy):
    guidance = make_guidance(tiny_sd_path, guidance_scale=3.0, weighting_strategy=strategy)
    uniform = make_guidance(tiny_sd_path, guidance_scale=3.0, weighting_strategy="uniform")
    grad = run_on_latents(guidance, prompt_utils, latents)[1]
    grad_uniform = run_on_latents(uniform, prompt_utils, latents)[1]
    t, _ = replay_noise(guidance, latents)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    w = {"sds": 1 - a, "uniform": torch.ones_like(a), "fantasia3d": a.sqrt() * (1 - a)}[strategy]
    torch.testing.assert_close(grad, w * grad_uniform, rtol=1e-5, atol=1e-7)


def test_unknown_weighting_strategy_is_a_config_error(tiny_sd_path):
    with pytest.raises(ConfigError, match="weighting_strategy 'dreamfusion'"):
        make_guidance(tiny_sd_path, weighting_strategy="dreamfusion")


def test_min_max_step_and_grad_clip_follow_schedules(tiny_sd_path):
    min_sched, max_sched, clip_sched = [0, 0.5, 0.02, 100], [0, 0.98, 0.5, 100], [0, 2.0, 0.5, 100]
    guidance = make_guidance(
        tiny_sd_path, min_step_percent=min_sched, max_step_percent=max_sched, grad_clip=clip_sched
    )
    assert (guidance.min_step, guidance.max_step) == (500, 980)
    for step in (0, 30, 75, 100, 150):
        guidance.do_update_step(0, step)
        assert guidance.min_step == int(1000 * C(min_sched, 0, step))
        assert guidance.max_step == int(1000 * C(max_sched, 0, step))
        assert guidance.grad_clip_val == pytest.approx(C(clip_sched, 0, step))
    assert (guidance.min_step, guidance.max_step) == (20, 500)
    torch.manual_seed(0)
    t = guidance.sample_timesteps(4000)
    assert int(t.min()) == 20 and int(t.max()) == 500


def test_max_step_anneals_after_start_step(tiny_sd_path):
    guidance = make_guidance(
        tiny_sd_path,
        anneal_start_step=10,
        max_step_percent_annealed=0.4,
        enable_channels_last_format=True,  # published name of enable_channels_last
    )
    guidance.do_update_step(0, 10)
    assert guidance.max_step == 980
    guidance.do_update_step(0, 11)
    assert guidance.max_step == 400


def test_grad_clip_bounds_every_gradient_element(tiny_sd_path, prompt_utils, latents):
    unclipped = run_on_latents(
        make_guidance(tiny_sd_path, guidance_scale=50.0), prompt_utils, latents
    )[1]
    guidance = make_guidance(tiny_sd_path, guidance_scale=50.0, grad_clip=0.05)
    guidance.do_update_step(0, 0)
    out, grad = run_on_latents(guidance, prompt_utils, latents)
    assert (unclipped * B).abs().max() > 0.05  # the clip is active
    torch.testing.assert_close(grad * B, (unclipped * B).clamp(-0.05, 0.05))
    assert float(out["grad_norm"]) <= 0.05 * latents.numel() ** 0.5 + 1e-6


def test_sjc_gradient_matches_hand_computation(tiny_sd_path, prompt_utils, latents):
    for var_red in (True, False):
        guidance = make_guidance(tiny_sd_path, guidance_scale=4.0, use_sjc=True, var_red=var_red)
        out, grad = run_on_latents(guidance, prompt_utils, latents)
        assert "loss_sds" in out
        t, noise = replay_noise(guidance, latents)
        a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        sigma = ((1 - a) / a).sqrt()
        zs = latents + sigma * noise
        cond, uncond = unet_eps(guidance, zs / (1 + sigma**2).sqrt(), t, prompt_utils)
        denoised = zs - sigma * (cond + 4.0 * (cond - uncond))
        expected = -(denoised - (latents if var_red else zs)) / sigma
        torch.testing.assert_close(grad * B, expected, rtol=1e-4, atol=1e-4)


def test_perp_neg_adds_perpendicular_negative_directions(tiny_sd_path, prompt_utils, latents):
    from threestudio.utils.ops import perpendicular_component

    guidance = make_guidance(tiny_sd_path, guidance_scale=6.0)
    prompt_utils.use_perp_neg = True
    grad = run_on_latents(guidance, prompt_utils, latents)[1]
    t, noise = replay_noise(guidance, latents)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    cond, uncond = unet_eps(guidance, noisy, t, prompt_utils)
    delta = cond - uncond
    for i, weight in enumerate(prompt_utils.neg_weights):
        with torch.no_grad():
            neg = guidance.unet(
                noisy, t, encoder_hidden_states=prompt_utils.negs[i].expand(B, -1, -1)
            ).sample
        delta = delta + weight * perpendicular_component(neg - uncond, cond - uncond)
    expected = (1 - a) * (uncond + 6.0 * delta - noise)
    # float32 sums in the perpendicular projection change with the thread count (~2e-5)
    torch.testing.assert_close(grad * B, expected, rtol=1e-4, atol=1e-4)


def test_rgb_path_and_guidance_eval_images(tiny_sd_path, prompt_utils):
    guidance = make_guidance(tiny_sd_path, guidance_scale=7.5, use_img_loss=True)
    rgb = torch.rand(B, 24, 24, 3, requires_grad=True)
    out = guidance(rgb, prompt_utils, **cameras(), guidance_eval=True)
    (out["loss_sds"] + out["loss_sds_img"]).backward()
    assert rgb.grad.abs().sum() > 0 and torch.isfinite(rgb.grad).all()
    ev = out["eval"]
    assert ev["bs"] == B and len(ev["noise_levels"]) == B
    size = guidance.vae.config.sample_size
    for key in ("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final"):
        assert ev[key].shape == (B, size, size, 3)
        assert 0 <= float(ev[key].min()) and float(ev[key].max()) <= 1


def test_missing_model_is_one_line_naming_it(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(MissingModelError) as info:
        make_guidance(missing)
    message = str(info.value)
    assert "\n" not in message and missing in message
    assert "pretrained_model_name_or_path" in message
    with pytest.raises(MissingModelError, match="someone/not-a-cached-model"):
        make_guidance("someone/not-a-cached-model")


def test_sds_pulls_a_latent_toward_the_model_distribution(tiny_sd_path, prompt_utils):
    """Fit the tiny UNet to a one-point data set, then let SDS optimise a random latent: the loss
    falls and the latent moves toward the point the model has learnt."""
    guidance = make_guidance(
        tiny_sd_path, guidance_scale=1.0, min_step_percent=0.2, max_step_percent=0.8
    )
    torch.manual_seed(0)
    target = torch.randn(1, 4, 8, 8)
    unet = guidance.unet.requires_grad_(True).train()
    fit = torch.optim.Adam(unet.parameters(), lr=3e-3)
    for _ in range(60):
        t = torch.randint(0, 1000, [4])
        noise = torch.randn(4, 4, 8, 8)
        noisy = guidance.scheduler.add_noise(target.expand(4, -1, -1, -1), noise, t)
        pred = unet(noisy, t, encoder_hidden_states=prompt_utils.cond.expand(4, -1, -1)).sample
        fit.zero_grad()
        torch.nn.functional.mse_loss(pred, noise).backward()
        fit.step()
    unet.requires_grad_(False).eval()

    latent = torch.nn.Parameter(torch.randn(1, 8, 8, 4))
    optimizer = torch.optim.Adam([latent], lr=0.05)
    losses = []
    start = float((latent.detach().permute(0, 3, 1, 2) - target).norm())
    for _ in range(50):
        out = guidance(latent, prompt_utils, **cameras(1), rgb_as_latents=True)
        optimizer.zero_grad()
        out["loss_sds"].backward()
        optimizer.step()
        losses.append(float(out["loss_sds"]))
    end = float((latent.detach().permute(0, 3, 1, 2) - target).norm())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    assert end < 0.75 * start, (start, end)


def test_every_guidance_is_registered():
    for name in (
        "stable-diffusion-guidance",
        "deep-floyd-guidance",
        "stable-diffusion-vsd-guidance",
        "zero123-guidance",
        "stable-zero123-guidance",
        "stable-diffusion-instructpix2pix-guidance",
        "stable-diffusion-controlnet-guidance",
    ):
        assert threestudio.find(name).__module__.startswith("threestudio.models.guidance.")


def test_hifa_image_loss_gradient(tiny_sd_path, prompt_utils):
    guidance = make_guidance(tiny_sd_path, guidance_scale=2.0, use_img_loss=True)
    rgb = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    rgb.requires_grad_(True)
    torch.manual_seed(0)
    out = guidance(rgb, prompt_utils, **cameras(1))
    out["loss_sds_img"].backward()

    vae = guidance.vae
    torch.manual_seed(0)
    with torch.no_grad():
        image = rgb.detach().permute(0, 3, 1, 2)
        latents = vae.encode(image * 2 - 1).latent_dist.sample() * vae.config.scaling_factor
        t = torch.randint(guidance.min_step, guidance.max_step + 1, [1])
        noise = torch.randn_like(latents)
        a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        cond, uncond = unet_eps(guidance, noisy, t, prompt_utils)
        eps = cond + 2.0 * (cond - uncond)
        x0 = (noisy - (1 - a).sqrt() * eps) / a.sqrt()
        image_x0 = (vae.decode(x0 / vae.config.scaling_factor).sample * 0.5 + 0.5).clamp(0, 1)
        expected = (1 - a) * (image - image_x0) * a.sqrt() / (1 - a).sqrt()
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)


def test_cfg_form_uncond_is_the_diffusers_form(tiny_sd_path, prompt_utils, latents):
    guidance = make_guidance(tiny_sd_path, guidance_scale=7.5, cfg_form="uncond")
    grad = run_on_latents(guidance, prompt_utils, latents)[1]
    t, noise = replay_noise(guidance, latents)
    alpha_bar = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    cond, uncond = unet_eps(guidance, noisy, t, prompt_utils)
    expected = (1 - alpha_bar) * (uncond + 7.5 * (cond - uncond) - noise)
    torch.testing.assert_close(grad * B, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="cfg_form 'diffusers'"):
        make_guidance(tiny_sd_path, cfg_form="diffusers")


def test_sqrt_anneal_sets_one_timestep_per_step(tiny_sd_path):
    """HiFA: min_step = max_step = 1000 * (min + (max - min) (1 - sqrt(step / trainer_max_steps)))."""
    guidance = make_guidance(tiny_sd_path, sqrt_anneal=True, trainer_max_steps=100)
    for step in (0, 25, 64, 100, 500):
        # the established expression (held at min past trainer_max_steps)
        percent = (0.98 - 0.02) * (1 - min(step / 100, 1.0) ** 0.5) + 0.02
        guidance.do_update_step(0, step)
        assert guidance.min_step == guidance.max_step == int(1000 * percent), step
        t = guidance.sample_timesteps(64)
        assert bool((t == int(1000 * percent)).all())
    # a schedule in max_step_percent: its start value, as the established guidance reads it
    scheduled = make_guidance(
        tiny_sd_path,
        sqrt_anneal=True,
        trainer_max_steps=100,
        max_step_percent=[5000, 0.9, 0.5, 5001],
    )
    scheduled.do_update_step(0, 25)
    assert scheduled.max_step == int(1000 * ((0.9 - 0.02) * (1 - 0.25**0.5) + 0.02))
