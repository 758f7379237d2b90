"""zero123-unified-guidance: its SDS gradient by hand (the relative camera from the converted
angles, image-and-camera CFG with a zero unconditional branch, one timestep per batch, the
established weighting), equality with zero123-guidance under the same semantics, VSD with phi
on the pretrained UNet (and on a model of its own), its images, and loading the diffusers
ports' clip_camera_projection/ layout."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import threestudio
from threestudio.utils.errors import ConfigError, UserError

B = 2


@pytest.fixture(scope="module")
def cond_image(tmp_path_factory):
    rng = np.random.default_rng(1)
    rgba = (rng.random((20, 20, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:, :6, 3] = 0  # transparent: composited on white
    path = tmp_path_factory.mktemp("cond") / "cond_rgba.png"
    Image.fromarray(rgba).save(path)
    return str(path)


CAMERA = {"cond_elevation_deg": 10.0, "cond_azimuth_deg": 20.0, "cond_camera_distance": 1.2}


def make(path, cond_image, **cfg):
    return threestudio.find("zero123-unified-guidance")(
        {
            "pretrained_model_name_or_path": path,
            "cond_image_path": cond_image,
            "half_precision_weights": False,
            **CAMERA,
            **cfg,
        }
    )


def cameras():
    return torch.tensor([40.0, -5.0]), torch.tensor([110.0, 20.0]), torch.tensor([1.5, 1.2])


def test_defaults_are_the_established_ones():
    cfg = threestudio.find("zero123-unified-guidance").Config()
    assert cfg.pretrained_model_name_or_path == "bennyguo/zero123-diffusers"
    assert cfg.vsd_phi_model_name_or_path == "bennyguo/zero123-diffusers"
    assert (cfg.guidance_type, cfg.guidance_scale, cfg.weighting_strategy) == (
        "sds",
        5.0,
        "dreamfusion",
    )
    assert (cfg.cond_camera_distance, cfg.min_step_percent, cfg.max_step_percent) == (
        1.2,
        0.02,
        0.98,
    )
    assert cfg.vsd_camera_condition_type == "extrinsics" and cfg.vsd_use_camera_condition


def test_sds_gradient_matches_hand_computation(tiny_zero123_path, cond_image):
    guidance = make(tiny_zero123_path, cond_image, guidance_scale=4.0)
    pipe = guidance.pipe
    latents = torch.randn(B, 8, 8, 4, generator=torch.Generator().manual_seed(2))
    x = latents.clone().requires_grad_(True)
    elevation, azimuth, distance = cameras()
    torch.manual_seed(0)
    out = guidance(x, None, elevation, azimuth, distance, rgb_as_latents=True)
    out["loss_sd"].backward()

    torch.manual_seed(0)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [1]).repeat(B)
    clean = latents.permute(0, 3, 1, 2)  # latents are taken as they are (no [0, 1] mapping)
    noise = torch.randn_like(clean)
    a = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
    # the relative camera: polar 50 - 80 = -30 degrees, azimuth 90 degrees on, 0.3 further;
    # and for the second view polar 95 - 80 = 15 degrees, the same azimuth and distance
    camera = torch.tensor(
        [[math.radians(-30.0), 1.0, 0.0, 0.3], [math.radians(15.0), 0.0, 1.0, 0.0]]
    )
    torch.testing.assert_close(
        guidance.camera_embedding(elevation, azimuth, distance), camera, atol=1e-6, rtol=1e-6
    )
    with torch.no_grad():
        token = pipe.cc_projection(
            torch.cat([guidance.clip_embeds[:, 0].expand(B, -1), camera], dim=-1)
        )[:, None]
        concat = guidance.concat_latents.expand(B, -1, -1, -1)
        cond = pipe.unet(torch.cat([noisy, concat], 1), t, encoder_hidden_states=token).sample
        uncond = pipe.unet(
            torch.cat([noisy, torch.zeros_like(concat)], 1),
            t,
            encoder_hidden_states=torch.zeros_like(token),
        ).sample
    grad = (1 - a.sqrt()) * (uncond + 4.0 * (cond - uncond) - noise)  # dreamfusion: 1 - sqrt(a)
    assert (cond - uncond).abs().max() > 1e-4
    # loss = 0.5 |x - (x - grad)|^2 / B
    torch.testing.assert_close(x.grad.permute(0, 3, 1, 2) * B, grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss_sd"], 0.5 * grad.square().sum() / B)
    assert out["timestep"] == t[0].float() and "loss_train_phi" not in out
    assert list(guidance.parameters()) == []  # SDS: nothing trains


def test_sds_equals_zero123_guidance_under_the_same_semantics(tiny_zero123_path, cond_image):
    """A batch of one (one timestep either way), w = 1 - alpha_bar, a render in [0, 1]."""
    unified = make(tiny_zero123_path, cond_image, weighting_strategy="sds")
    plain = threestudio.find("zero123-guidance")(
        {
            "pretrained_model_name_or_path": tiny_zero123_path,
            "cond_image_path": cond_image,
            **CAMERA,
        }
    )
    rgb = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    grads, losses = [], []
    for guidance, key in ((unified, "loss_sd"), (plain, "loss_sds")):
        x = rgb.clone().requires_grad_(True)
        torch.manual_seed(3)
        batch = {"elevation": torch.tensor([30.0]), "azimuth": torch.tensor([-60.0])}
        loss = guidance(x, camera_distances=torch.tensor([1.2]), **batch)[key]
        loss.backward()
        grads.append(x.grad)
        losses.append(loss)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_images_and_guidance_eval(tiny_zero123_path, cond_image):
    guidance = make(
        tiny_zero123_path, cond_image, return_rgb_1step_orig=True, return_rgb_multistep_orig=True
    )
    elevation, azimuth, distance = cameras()
    out = guidance(torch.rand(B, 16, 16, 3), None, elevation, azimuth, distance, guidance_eval=True)
    for key in ("rgb_1step_orig", "rgb_multistep_orig"):
        assert out[key].shape == (B, 16, 16, 3)
        assert 0 <= float(out[key].min()) and float(out[key].max()) <= 1
    assert out["latents_multistep_orig"].shape == (B, 4, 8, 8)
    assert out["eval"]["bs"] == B and out["eval"]["imgs_final"].shape == (B, 16, 16, 3)


def test_bad_config_is_one_line_naming_the_key(tiny_zero123_path, cond_image, tmp_path):
    with pytest.raises(ConfigError, match="guidance_type"):
        make(tiny_zero123_path, cond_image, guidance_type="sjc")
    with pytest.raises(ConfigError, match="vsd_camera_condition_type"):
        make(tiny_zero123_path, cond_image, guidance_type="vsd", vsd_camera_condition_type="x")
    with pytest.raises(ConfigError, match="convert_zero123"):
        make("load/zero123/zero123-xl.ckpt", cond_image)
    with pytest.raises(UserError, match="conditioning image not found"):
        make(tiny_zero123_path, str(tmp_path / "missing.png"))


def randomise_lora(guidance, seed=5):
    gen = torch.Generator().manual_seed(seed)
    for module in guidance.lora_layers[1::2]:  # the B matrices start at zero
        for p in module.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.2


def test_vsd_gradient_is_pretrained_minus_phi(tiny_zero123_path, cond_image):
    """phi on the pretrained UNet: eps_phi = est_0 + s_phi (est_cam - est_0), both halves with
    the image token and image latent; the pretrained prediction with phi switched off."""
    guidance = make(
        tiny_zero123_path,
        cond_image,
        guidance_type="vsd",
        vsd_phi_model_name_or_path=None,
        vsd_camera_condition_type="spherical",
        vsd_guidance_scale_phi=2.0,
    )
    assert guidance.shares_unet and guidance.frozen.unet_phi is guidance.pipe.unet
    trainable = {n for n, p in guidance.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("lora_layers.", "camera_embedding.")) for n in trainable)
    randomise_lora(guidance)
    latents = torch.randn(1, 8, 8, 4, generator=torch.Generator().manual_seed(6))
    x = latents.clone().requires_grad_(True)
    elevation, azimuth, distance = torch.tensor([30.0]), torch.tensor([60.0]), torch.tensor([2.0])
    torch.manual_seed(0)
    out = guidance(x, None, elevation, azimuth, distance, rgb_as_latents=True)
    out["loss_sd"].backward()

    torch.manual_seed(0)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [1])
    clean = latents.permute(0, 3, 1, 2)
    noise = torch.randn_like(clean)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
    cond = guidance.conditioning(elevation, azimuth, distance)["cross_attention"]
    camera = torch.tensor([[math.radians(30.0), math.sin(math.radians(60.0)), 0.5, 2.0]])
    image = guidance.concat_latents
    unet = guidance.pipe.unet
    with torch.no_grad():
        with guidance.pretrained_unet():
            pretrained = unet(
                torch.cat([noisy.repeat(2, 1, 1, 1), torch.cat([image, 0 * image])], 1),
                t.repeat(2),
                encoder_hidden_states=cond,
            ).sample
        phi_in = torch.cat([noisy, image], 1)
        est_cam = unet(phi_in, t, encoder_hidden_states=cond[:1], class_labels=camera).sample
        est_0 = unet(phi_in, t, encoder_hidden_states=cond[:1], class_labels=0 * camera).sample
    eps_c, eps_u = pretrained.chunk(2)
    eps_pretrain = eps_u + 5.0 * (eps_c - eps_u)
    eps_phi = est_0 + 2.0 * (est_cam - est_0)
    assert (est_cam - est_0).abs().max() > 1e-4 and (eps_phi - eps_c).abs().max() > 1e-4
    expected = (1 - a.sqrt()) * (eps_pretrain - eps_phi)
    torch.testing.assert_close(x.grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5)
    assert out["loss_train_phi"].requires_grad


def test_vsd_trains_phi_only(tiny_zero123_path, cond_image):
    """loss_train_phi falls over a few Adam steps (its timesteps and noise fixed by the seed)
    while the pretrained prediction stays as it was; extrinsics camera, as published."""
    guidance = make(
        tiny_zero123_path, cond_image, guidance_type="vsd", vsd_phi_model_name_or_path=None
    )
    cond = guidance.conditioning(*[v[:1] for v in cameras()])["cross_attention"]
    gen = torch.Generator().manual_seed(7)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([500, 500])
    with torch.no_grad():
        before = guidance.forward_pretrained(x, t, cond)
    rgb = torch.rand(1, 16, 16, 3, generator=gen)
    c2w = torch.randn(1, 4, 4, generator=gen)
    optimizer = torch.optim.Adam(guidance.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        torch.manual_seed(1)
        out = guidance(rgb, None, *[v[:1] for v in cameras()], c2w=c2w)
        optimizer.zero_grad()
        out["loss_train_phi"].backward()
        optimizer.step()
        losses.append(float(out["loss_train_phi"]))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    with torch.no_grad():
        torch.testing.assert_close(guidance.forward_pretrained(x, t, cond), before)


def test_vsd_with_a_phi_model_of_its_own(tiny_zero123_path, cond_image):
    guidance = make(
        tiny_zero123_path,
        cond_image,
        guidance_type="vsd",
        vsd_phi_model_name_or_path=tiny_zero123_path,
        vsd_use_camera_condition=False,
    )
    assert not guidance.shares_unet and guidance.frozen.unet_phi is not guidance.pipe.unet
    assert not any("lora" in n for n, _ in guidance.pipe.unet.named_parameters())
    out = guidance(torch.rand(1, 16, 16, 3), None, *[v[:1] for v in cameras()])
    out["loss_train_phi"].backward()
    assert all(p.grad is not None for p in guidance.lora_layers.parameters())


def test_loads_the_diffusers_ports_projection_layout(tiny_zero123_path, cond_image, tmp_path):
    """bennyguo/zero123-diffusers keeps the projection in clip_camera_projection/ (config
    embedding_dim/additional_embeddings, weights proj.*): the same tokens come out."""
    from extern.zero123 import CCProjection, CLIPCameraProjection

    port = tmp_path / "port"
    shutil.copytree(tiny_zero123_path, port)
    original = CCProjection.from_pretrained(port / "cc_projection")
    shutil.rmtree(port / "cc_projection")
    dim = original.config.out_channel
    projection = CLIPCameraProjection(embedding_dim=dim, additional_embeddings=4)
    projection.proj.load_state_dict(original.projection.state_dict())
    projection.save_pretrained(port / "clip_camera_projection")
    assert (
        json.loads((port / "clip_camera_projection" / "config.json").read_text())["embedding_dim"]
        == dim
    )

    from_port = make(str(port), cond_image)
    assert isinstance(from_port.pipe.cc_projection, CLIPCameraProjection)
    reference = make(tiny_zero123_path, cond_image)
    views = cameras()
    torch.testing.assert_close(
        from_port.conditioning(*views)["cross_attention"],
        reference.conditioning(*views)["cross_attention"],
    )
