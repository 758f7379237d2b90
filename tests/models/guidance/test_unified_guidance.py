"""The unified guidance: its SDS step equals stable-diffusion-guidance's under the same config
semantics, its own weightings are the established formulas, and its VSD branch (phi sharing
the pretrained UNet) trains phi while leaving the pretrained prediction untouched."""

import pytest
import torch

import threestudio
from threestudio.utils.errors import ConfigError


def make_unified(path, **cfg):
    return threestudio.find("stable-diffusion-unified-guidance")(
        {"pretrained_model_name_or_path": path, "half_precision_weights": False, **cfg}
    )


def make_sds(path, **cfg):
    return threestudio.find("stable-diffusion-guidance")(
        {"pretrained_model_name_or_path": path, "half_precision_weights": False, **cfg}
    )


def run(guidance, prompt_utils, rgb, seed=0, **kwargs):
    rgb = rgb.detach().clone().requires_grad_(True)
    zeros = torch.zeros(rgb.shape[0])
    torch.manual_seed(seed)
    out = guidance(rgb, prompt_utils, zeros, zeros, zeros + 1.5, **kwargs)
    return out, rgb


@pytest.mark.parametrize(
    "semantics",
    [
        # the established SDS guidance's form and weighting
        {"cfg_form": "cond", "weighting_strategy": "sds", "guidance_scale": 100.0},
        # the diffusers form and a uniform weighting, with HiFA's image loss
        {
            "cfg_form": "uncond",
            "weighting_strategy": "uniform",
            "guidance_scale": 7.5,
            "use_img_loss": True,
        },
    ],
)
def test_sds_equals_stable_diffusion_guidance(tiny_sd_path, prompt_utils, semantics):
    """Same model, seed, timestep range and config semantics: the same loss values and the same
    gradient on the render (batch of one: the unified guidance draws one timestep per batch)."""
    use_img_loss = semantics.get("use_img_loss", False)
    unified = make_unified(
        tiny_sd_path, guidance_type="sds", **{**semantics, "use_img_loss": use_img_loss}
    )
    sds = make_sds(tiny_sd_path, **semantics)
    for guidance in (unified, sds):
        guidance.update_step(0, 0)
    rgb = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(3))

    out_u, rgb_u = run(unified, prompt_utils, rgb)
    out_s, rgb_s = run(sds, prompt_utils, rgb)
    torch.testing.assert_close(out_u["timestep"], out_s["timestep"])
    torch.testing.assert_close(out_u["loss_sd"], out_s["loss_sds"])
    torch.testing.assert_close(out_u["grad_norm"], out_s["grad_norm"])
    loss_u, loss_s = out_u["loss_sd"], out_s["loss_sds"]
    if use_img_loss:
        torch.testing.assert_close(out_u["loss_sd_img"], out_s["loss_sds_img"])
        loss_u, loss_s = loss_u + out_u["loss_sd_img"], loss_s + out_s["loss_sds_img"]
    loss_u.backward()
    loss_s.backward()
    assert rgb_s.grad.abs().sum() > 0
    torch.testing.assert_close(rgb_u.grad, rgb_s.grad)


@pytest.mark.parametrize(
    "strategy, formula",
    [
        ("dreamfusion", lambda a: 1 - a.sqrt()),
        ("fantasia3d", lambda a: a**0.25 * (1 - a.sqrt())),
        ("sds", lambda a: 1 - a),
    ],
)
def test_weightings_are_the_established_formulas(tiny_sd_path, prompt_utils, strategy, formula):
    """The gradient is w(t) times the uniform one at the same seed (so the loss w(t)^2 times)."""
    latents = torch.randn(1, 8, 8, 4, generator=torch.Generator().manual_seed(1))
    outs = {}
    for name in ("uniform", strategy):
        guidance = make_unified(tiny_sd_path, weighting_strategy=name, use_img_loss=False)
        outs[name], _ = run(guidance, prompt_utils, latents, rgb_as_latents=True)
    t = int(outs[strategy]["timestep"])
    assert t == int(outs["uniform"]["timestep"])
    w = formula(guidance.scheduler.alphas_cumprod[t])
    torch.testing.assert_close(outs[strategy]["loss_sd"], w**2 * outs["uniform"]["loss_sd"])


def test_one_timestep_per_batch_and_outputs(tiny_sd_path, prompt_utils):
    guidance = make_unified(
        tiny_sd_path, return_rgb_1step_orig=True, return_rgb_multistep_orig=True
    )
    assert guidance.cfg.use_img_loss and guidance.cfg.weighting_strategy == "dreamfusion"
    sampled = []
    sample = guidance.sample_timesteps

    def recording_sample(n):
        sampled.append(n)
        return sample(n)

    guidance.sample_timesteps = recording_sample
    out, rgb = run(guidance, prompt_utils, torch.rand(3, 16, 16, 3))
    assert sampled == [1]  # one timestep drawn for the batch of 3
    for key in ("rgb_1step_orig", "rgb_multistep_orig"):
        assert out[key].shape == (3, 16, 16, 3)
    assert "loss_train_phi" not in out
    (out["loss_sd"] + out["loss_sd_img"]).backward()
    assert rgb.grad.abs().sum() > 0


def test_bad_config_is_one_line_naming_the_key(tiny_sd_path):
    with pytest.raises(ConfigError, match="guidance_type"):
        make_unified(tiny_sd_path, guidance_type="sjc")
    with pytest.raises(ConfigError, match="weighting_strategy"):
        make_unified(tiny_sd_path, weighting_strategy="dreamfusion-typo")
    with pytest.raises(ConfigError, match="vsd_camera_condition_type"):
        make_unified(tiny_sd_path, guidance_type="vsd", vsd_camera_condition_type="polar")


def test_only_vsd_trains(tiny_sd_path):
    cls = threestudio.find("stable-diffusion-unified-guidance")
    assert not cls.has_trainable_parameters({"guidance_type": "sds"})
    assert not cls.has_trainable_parameters({})
    assert cls.has_trainable_parameters({"guidance_type": "vsd"})
    assert list(make_unified(tiny_sd_path).parameters()) == []


def test_vsd_trains_phi_and_leaves_the_pretrained_prediction_alone(tiny_sd_path, prompt_utils):
    """phi is the pretrained UNet with LoRA and a camera embedding: only those train, they
    stay out of the pretrained prediction, and loss_train_phi falls over a few Adam steps (the
    timesteps and noise of its denoising loss fixed by the seed)."""
    guidance = make_unified(tiny_sd_path, guidance_type="vsd", use_img_loss=False)
    assert guidance.shares_unet and guidance.frozen.unet_phi is guidance.frozen.unet
    trainable = {name for name, p in guidance.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("lora_layers.", "camera_embedding.")) for n in trainable)
    assert set(guidance.state_dict()) == {n for n, _ in guidance.named_parameters()}

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    t = torch.tensor([500])
    cond = prompt_utils.cond[None]
    with torch.no_grad():
        before = guidance.forward_pretrained(x, t, cond)
    rgb = torch.rand(1, 16, 16, 3, generator=gen)
    c2w = torch.randn(1, 4, 4, generator=gen)
    optimizer = torch.optim.Adam(guidance.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        out, _ = run(guidance, prompt_utils, rgb, seed=1, c2w=c2w)
        optimizer.zero_grad()
        out["loss_train_phi"].backward()
        optimizer.step()
        losses.append(float(out["loss_train_phi"]))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.9 * losses[0], losses
    with torch.no_grad():
        after = guidance.forward_pretrained(x, t, cond)
        phi = guidance.forward_phi(x, t, cond, c2w.reshape(1, 16))
    torch.testing.assert_close(after, before)
    assert (phi - before).abs().max() > 1e-3  # phi did move away from the pretrained model
    # the pretrained UNet's own weights never train
    frozen = [
        p
        for n, p in guidance.frozen.unet.named_parameters()
        if "lora_" not in n and not n.startswith("class_embedding.")
    ]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)


def test_vsd_gradient_is_pretrained_minus_phi(tiny_sd_path, prompt_utils):
    """grad = w(t) (eps_pretrain - eps_phi), eps_phi = est_0 + s (est_cam - est_0), both
    halves on the conditional (view-independent) text; spherical camera condition."""
    guidance = make_unified(
        tiny_sd_path,
        guidance_type="vsd",
        use_img_loss=False,
        vsd_guidance_scale_phi=2.0,
        vsd_camera_condition_type="spherical",
        guidance_scale=7.5,
    )
    gen = torch.Generator().manual_seed(5)
    for module in guidance.lora_layers[1::2]:
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.2
    latents = torch.randn(1, 8, 8, 4, generator=gen)
    elevation, azimuth, distance = torch.tensor([30.0]), torch.tensor([60.0]), torch.tensor([2.0])
    x = latents.detach().clone().requires_grad_(True)
    torch.manual_seed(0)
    out = guidance(x, prompt_utils, elevation, azimuth, distance, rgb_as_latents=True)
    out["loss_sd"].backward()

    torch.manual_seed(0)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [1])
    clean = guidance.render_to_latents(latents, True)["latents"]
    noise = torch.randn_like(clean)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
    cond, uncond = prompt_utils.cond[None], prompt_utils.uncond[None]
    camera = torch.stack(
        [
            torch.deg2rad(elevation),
            torch.sin(torch.deg2rad(azimuth)),
            torch.cos(torch.deg2rad(azimuth)),
            distance,
        ],
        dim=-1,
    )
    with torch.no_grad():
        eps_c = guidance.forward_pretrained(noisy, t, cond)
        eps_u = guidance.forward_pretrained(noisy, t, uncond)
        est_cam = guidance.forward_phi(noisy, t, cond, camera)
        est_0 = guidance.forward_phi(noisy, t, cond, 0 * camera)
    eps_pretrain = eps_u + 7.5 * (eps_c - eps_u)
    eps_phi = est_0 + 2.0 * (est_cam - est_0)
    expected = (1 - a.sqrt()) * (eps_pretrain - eps_phi)
    assert (est_cam - est_0).abs().max() > 1e-4
    torch.testing.assert_close(x.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)
