"""SDI: the DDIM inversion against hand computation and against diffusers' DDIM sampler, and
the SDI gradient against sigma_t / alpha_t (eps_pred - eps_inverted)."""

import json
import random
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from tiny_pipelines import build_tiny_sd  # noqa: E402  (tests/ is on sys.path: conftest)

import threestudio
from threestudio.utils.errors import ConfigError

B = 2


@pytest.fixture(scope="module")
def sd21_like_path(tmp_path_factory):
    """The tiny model with SD 2.1-base's scheduler settings: no x0 clipping, steps_offset 1 and
    set_alpha_to_one false (so the inversion's DDIM grid is 1, 101, ..., 901 and it starts from
    alpha_bar_0)."""
    root = Path(build_tiny_sd(tmp_path_factory.mktemp("tiny_sd21")))
    config_path = root / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(clip_sample=False, steps_offset=1, set_alpha_to_one=False)
    config_path.write_text(json.dumps(config))
    return str(root)


def make_guidance(path, **cfg):
    return threestudio.find("stable-diffusion-sdi-guidance")(
        {"pretrained_model_name_or_path": path, "half_precision_weights": False, **cfg}
    )


def test_inversion_path_and_constant_noise_inversion(sd21_like_path):
    """With a predictor whose output is a constant epsilon e, each DDIM inversion step keeps
    the x0 estimate fixed, so the end point is sqrt(a_end) x0 + sqrt(1 - a_end) e with
    x0 = (x - sqrt(1 - a_0) e) / sqrt(a_0) (the start is read at alpha_bar_0)."""
    guidance = make_guidance(sd21_like_path, inversion_eta=0.0)
    alphas = guidance.scheduler.alphas_cumprod
    assert guidance.alpha_bar_start == pytest.approx(float(alphas[0]))
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(B, 4, 8, 8, generator=gen)
    eps = torch.randn(1, 4, 8, 8, generator=gen)
    seen = []

    def constant(x, t):
        seen.append(t.tolist())
        return eps.expand_as(x)

    out = guidance.invert(latents, 350, constant, delta=7)
    # the grid below t (leading spacing, offset 1), one step before it, then t + delta
    assert [s[0] for s in seen] == [-99, 1, 101, 201, 301]
    assert all(s == [s[0]] * B for s in seen)
    assert out["t_end"] == 357
    a0, a_end = alphas[0], alphas[357]
    x0 = (latents - (1 - a0).sqrt() * eps) / a0.sqrt()
    expected = a_end.sqrt() * x0 + (1 - a_end).sqrt() * eps
    torch.testing.assert_close(out["latents_noisy"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out["noise"], (expected - a_end.sqrt() * latents) / (1 - a_end).sqrt(), atol=1e-4, rtol=0
    )
    # the last step never passes the last training timestep
    assert guidance.invert(latents, 960, constant, delta=80)["t_end"] == 999


def test_inversion_with_alpha_one_recovers_the_constant_noise(tiny_sd_path):
    """Without set_alpha_to_one in the config (DDIM's default, true) the start is read as
    clean (alpha_bar = 1): the inverted noise is exactly the predictor's constant epsilon."""
    guidance = make_guidance(tiny_sd_path, inversion_eta=0.0)
    assert guidance.alpha_bar_start == 1.0
    # inside [-1, 1]: the tiny scheduler clips x0 estimates (clip_sample, DDPM's default)
    assert guidance.scheduler.config.clip_sample
    latents = torch.rand(B, 4, 8, 8) * 1.8 - 0.9
    eps = torch.randn(B, 4, 8, 8)
    out = guidance.invert(latents, 500, lambda x, t: eps, delta=0)
    torch.testing.assert_close(out["noise"], eps, atol=1e-4, rtol=0)


def test_stochastic_inversion_adds_eta_times_ddim_sigma(sd21_like_path):
    """Each step adds eta * sigma z, sigma^2 being the variance DDIM's sampler adds on the step
    back down (diffusers' DDIMScheduler._get_variance(t_next, t_cur)); z is drawn in order."""
    eta = 0.3
    guidance = make_guidance(sd21_like_path, inversion_eta=eta)
    ddim = DDIMScheduler.from_config(guidance.scheduler.config)
    alphas = guidance.scheduler.alphas_cumprod
    latents = torch.randn(B, 4, 8, 8)
    eps = torch.randn(B, 4, 8, 8)
    torch.manual_seed(3)
    out = guidance.invert(latents, 250, lambda x, t: eps, delta=20)

    torch.manual_seed(3)
    path = [-99, 1, 101, 201, 270]
    x0 = (latents - (1 - alphas[0]).sqrt() * eps) / alphas[0].sqrt()
    for t_cur, t_next in zip(path[:-1], path[1:]):
        sigma = ddim._get_variance(t_next, t_cur) ** 0.5
        x = alphas[t_next].sqrt() * x0 + (1 - alphas[t_next]).sqrt() * eps
        x = x + eta * sigma * torch.randn_like(x)
        x0 = (x - (1 - alphas[t_next]).sqrt() * eps) / alphas[t_next].sqrt()
    torch.testing.assert_close(out["latents_noisy"], x, rtol=1e-5, atol=1e-5)


def test_inversion_then_ddim_sampling_returns_to_the_start(sd21_like_path, prompt_utils):
    """With the tiny UNet: invert to t = 401 (a grid timestep, eta 0), then denoise with
    diffusers' DDIM sampler on the same grid down to its final alpha: the round trip lands
    close to the start, and (DDIM inversion being first order) twice as close with 2.5 times
    the steps."""
    zeros = torch.zeros(1)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    errors = {}
    for n_steps in (20, 50):
        guidance = make_guidance(sd21_like_path, inversion_eta=0.0, inversion_n_steps=n_steps)
        embeddings, _ = guidance.text_embeddings(prompt_utils, zeros, zeros, zeros)
        predict = guidance.guided_predictor(guidance.forward_unet, embeddings, None, 1.0)
        out = guidance.invert(latents, 401, predict, delta=0)
        assert out["t_end"] == 401

        ddim = DDIMScheduler.from_config(guidance.scheduler.config)
        ddim.set_timesteps(n_steps)
        x = out["latents_noisy"]
        with torch.no_grad():
            for t in [t for t in ddim.timesteps.tolist() if t <= 401]:
                x = ddim.step(predict(x, torch.tensor([t])), t, x, eta=0.0).prev_sample
        errors[n_steps] = float((x - latents).norm() / latents.norm())
        moved = float((out["latents_noisy"] - latents).norm() / latents.norm())
        assert moved > 0.3, moved
    assert errors[50] < 0.05 * moved, (errors, moved)
    assert errors[50] < 0.5 * errors[20], errors


@pytest.mark.parametrize("jitter", [0.0, 0.55])
def test_sdi_gradient_is_the_weighted_noise_residual(
    sd21_like_path, prompt_utils, jitter, monkeypatch
):
    """grad = latents - x0_hat(x_noisy, t); the loss is 0.5 mean(grad^2) / B. When the
    inversion ends at t (no jitter) that is sigma_t / alpha_t (eps_pred - eps_inverted); with
    the jitter the latents reached at t + delta are denoised as if at t, as established."""
    guidance = make_guidance(sd21_like_path, min_step_percent=0.25, max_step_percent=0.98)
    guidance.update_step(0, 5000)  # t_anneal: 0.98 - (0.98 - 0.25) / 2 -> t = 615
    assert guidance.min_step == guidance.max_step == 615
    recorded = {}
    invert = guidance.invert

    def recording_invert(*args, **kwargs):
        recorded.update(invert(*args, **kwargs))
        return recorded

    guidance.invert = recording_invert
    latents = torch.randn(B, 8, 8, 4, generator=torch.Generator().manual_seed(2))
    latents.requires_grad_(True)
    zeros = torch.zeros(B)
    monkeypatch.setattr(random, "random", lambda: jitter)
    out = guidance(latents, prompt_utils, zeros, zeros, zeros, rgb_as_latents=True, test_info=True)
    out["loss_sdi"].backward()
    delta = int(jitter * 1000 // 10)
    assert recorded["t_end"] == 615 + delta

    x = latents.detach().permute(0, 3, 1, 2)
    a = guidance.scheduler.alphas_cumprod[615]
    eps_pred = out["noise_pred"]
    x0_hat = (recorded["latents_noisy"] - (1 - a).sqrt() * eps_pred) / a.sqrt()
    grad = x - x0_hat
    if delta == 0:
        weighted = (1 - a).sqrt() / a.sqrt() * (eps_pred - recorded["noise"])
        torch.testing.assert_close(grad, weighted, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["target_latent"], x0_hat, rtol=1e-5, atol=1e-5)
    n = grad.numel()
    torch.testing.assert_close(latents.grad.permute(0, 3, 1, 2), grad / (n * B))
    torch.testing.assert_close(out["loss_sdi"].detach(), 0.5 * (grad**2).mean() / B)
    # the guided prediction is the established SDS form cond + 7.5 (cond - uncond)
    assert guidance.cfg.cfg_form == "cond"


def test_random_noise_when_sdi_is_off(sd21_like_path, prompt_utils):
    """enable_sdi false: fresh noise at t and the same x0 target (an SDS-like step)."""
    guidance = make_guidance(sd21_like_path, enable_sdi=False, t_anneal=False)
    guidance.update_step(0, 0)
    assert (guidance.min_step, guidance.max_step) == (20, 980)
    latents = torch.randn(1, 8, 8, 4)
    zeros = torch.zeros(1)
    torch.manual_seed(0)
    out = guidance(latents, prompt_utils, zeros, zeros, zeros, rgb_as_latents=True, test_info=True)
    torch.manual_seed(0)
    t = torch.randint(20, 981, [1])
    # the latents of a permuted render are channels-last: randn_like fills them in that order
    noise = torch.randn_like(guidance.render_to_latents(latents, True)["latents"])
    a = guidance.scheduler.alphas_cumprod[t]
    noisy = a.sqrt() * latents.permute(0, 3, 1, 2) + (1 - a).sqrt() * noise
    x0_hat = (noisy - (1 - a).sqrt() * out["noise_pred"]) / a.sqrt()
    torch.testing.assert_close(out["target_latent"], x0_hat, rtol=1e-5, atol=1e-5)


def test_t_anneal_is_linear_and_holds_at_min(sd21_like_path):
    guidance = make_guidance(sd21_like_path, min_step_percent=0.25, trainer_max_steps=100)
    guidance.update_step(0, 0)
    assert guidance.min_step == guidance.max_step == 980
    guidance.update_step(0, 40)
    assert guidance.min_step == guidance.max_step == int(1000 * (0.98 - 0.73 * 0.4))
    guidance.update_step(0, 300)
    assert guidance.min_step == guidance.max_step == 250


def test_rgb_path_test_info_images_and_bad_config(sd21_like_path, prompt_utils):
    guidance = make_guidance(sd21_like_path)
    rgb = torch.rand(1, 16, 16, 3, requires_grad=True)
    zeros = torch.zeros(1)
    out = guidance(rgb, prompt_utils, zeros, zeros, zeros, test_info=True)
    for key in ("target", "noisy_img", "noise_img"):
        assert out[key].shape == (16, 16, 3)
    out["loss_sdi"].backward()
    assert rgb.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="use_img_loss"):
        make_guidance(sd21_like_path, use_img_loss=True)
