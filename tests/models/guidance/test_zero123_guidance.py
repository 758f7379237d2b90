import math

import numpy as np
import pytest
import torch
from PIL import Image

import threestudio
from threestudio.utils.errors import ConfigError, MissingModelError, UserError

B = 2


@pytest.fixture(scope="module")
def cond_image(tmp_path_factory):
    rng = np.random.default_rng(0)
    rgba = (rng.random((20, 20, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0  # a transparent band: composited on white
    path = tmp_path_factory.mktemp("cond") / "cond_rgba.png"
    Image.fromarray(rgba).save(path)
    return str(path)


def make_guidance(name, path, cond_image, **cfg):
    return threestudio.find(name)(
        {"pretrained_model_name_or_path": path, "cond_image_path": cond_image, **cfg}
    )


def test_relative_camera_embeddings(tiny_zero123_path, cond_image):
    cfg = {"cond_elevation_deg": 10.0, "cond_azimuth_deg": 20.0, "cond_camera_distance": 1.2}
    zero123 = make_guidance("zero123-guidance", tiny_zero123_path, cond_image, **cfg)
    stable = make_guidance("stable-zero123-guidance", tiny_zero123_path, cond_image, **cfg)
    elevation, azimuth, distance = torch.tensor([40.0]), torch.tensor([110.0]), torch.tensor([1.5])
    emb = zero123.camera_embedding(elevation, azimuth, distance)[0]
    # polar = 90 - elevation: 50 - 80 = -30 degrees; azimuth 90 degrees later; 0.3 further
    expected = torch.tensor([math.radians(-30.0), 1.0, 0.0, 0.3])
    torch.testing.assert_close(emb, expected, atol=1e-6, rtol=1e-6)
    emb_stable = stable.camera_embedding(elevation, azimuth, distance)[0]
    expected[3] = math.radians(80.0)  # the conditioning view's polar angle
    torch.testing.assert_close(emb_stable, expected, atol=1e-6, rtol=1e-6)


def test_conditioning_changes_with_the_relative_camera(tiny_zero123_path, cond_image):
    guidance = make_guidance("zero123-guidance", tiny_zero123_path, cond_image)
    elevation, distance = torch.zeros(3), torch.full([3], 1.2)
    cond = guidance.conditioning(elevation, torch.tensor([0.0, 90.0, 360.0]), distance)
    tokens = cond["cross_attention"][:3]
    assert not torch.allclose(tokens[0], tokens[1])
    torch.testing.assert_close(tokens[0], tokens[2], atol=1e-5, rtol=1e-5)  # full turn: same view
    assert torch.count_nonzero(cond["cross_attention"][3:]) == 0  # unconditional branch is zero
    assert torch.count_nonzero(cond["concat"][3:]) == 0

    # the gradient depends on the camera: same noise and timestep, different azimuth
    rgb = torch.rand(1, 16, 16, 3)
    grads = []
    for azimuth in (0.0, 90.0):
        x = rgb.clone().requires_grad_(True)
        torch.manual_seed(0)
        # image systems call it with the camera batch only (no prompt_utils)
        batch = {
            "elevation": torch.zeros(1),
            "azimuth": torch.tensor([azimuth]),
            "camera_distances": torch.full([1], 1.2),
        }
        guidance(x, **batch, rgb_as_latents=False)["loss_sds"].backward()
        grads.append(x.grad)
    assert (grads[0] - grads[1]).abs().max() > 1e-3 * grads[0].abs().max()


def test_zero123_sds_gradient_matches_hand_computation(tiny_zero123_path, cond_image):
    guidance = make_guidance("zero123-guidance", tiny_zero123_path, cond_image, guidance_scale=4.0)
    pipe = guidance.pipe
    latents = torch.randn(B, 8, 8, 4, requires_grad=True)
    elevation, azimuth, distance = (
        torch.tensor([0.0, 30.0]),
        torch.tensor([45.0, -60.0]),
        torch.full([B], 1.2),
    )
    torch.manual_seed(0)
    guidance(latents, None, elevation, azimuth, distance, rgb_as_latents=True)[
        "loss_sds"
    ].backward()

    torch.manual_seed(0)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [B])
    # as established, latent renders in [0, 1] are mapped to [-1, 1]
    x = latents.detach().permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn_like(x)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x + (1 - a).sqrt() * noise
    image = torch.from_numpy(
        np.asarray(
            Image.open(cond_image).convert("RGBA").resize((16, 16), Image.BICUBIC), dtype=np.float32
        )
        / 255
    )
    image = (image[..., :3] * image[..., 3:] + 1 - image[..., 3:]).permute(2, 0, 1)[None]
    with torch.no_grad():
        clip = pipe.image_encoder(
            (
                torch.nn.functional.interpolate(image, (16, 16), mode="bicubic", antialias=True)
                - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
            )
            / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        ).image_embeds
        camera = guidance.camera_embedding(elevation, azimuth, distance)
        token = pipe.cc_projection(torch.cat([clip.expand(B, -1), camera], dim=-1))[:, None]
        concat = pipe.vae.encode(image * 2 - 1).latent_dist.mode().expand(B, -1, -1, -1)
        cond = pipe.unet(torch.cat([noisy, concat], 1), t, encoder_hidden_states=token).sample
        uncond = pipe.unet(
            torch.cat([noisy, torch.zeros_like(concat)], 1),
            t,
            encoder_hidden_states=torch.zeros_like(token),
        ).sample
    expected = (1 - a) * (uncond + 4.0 * (cond - uncond) - noise)
    # d loss / d x = grad / B and x = 2 latents - 1
    torch.testing.assert_close(
        latents.grad.permute(0, 3, 1, 2) * B / 2, expected, rtol=1e-4, atol=1e-4
    )


def test_pipeline_round_trip_and_sampling(tiny_zero123_path, cond_image, tmp_path):
    from extern.zero123 import Zero123Pipeline, load_rgba_image

    pipe = Zero123Pipeline.from_pretrained(tiny_zero123_path)
    pipe.save_pretrained(tmp_path / "copy")
    copy = Zero123Pipeline.from_pretrained(tmp_path / "copy")
    image = load_rgba_image(cond_image, 16)
    camera = torch.tensor([[0.1, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    a = pipe(image, camera, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    b = copy(image, camera, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 16, 16) and 0 <= float(a.min()) and float(a.max()) <= 1
    torch.testing.assert_close(a, b)


def test_user_errors(tiny_zero123_path, cond_image, tmp_path):
    with pytest.raises(UserError, match="conditioning image not found"):
        make_guidance("zero123-guidance", tiny_zero123_path, str(tmp_path / "missing.png"))
    with pytest.raises(ConfigError, match="convert_zero123"):
        make_guidance("zero123-guidance", "load/zero123/105000.ckpt", cond_image)
    with pytest.raises(MissingModelError) as info:
        make_guidance("stable-zero123-guidance", str(tmp_path / "stable-zero123"), cond_image)
    assert "\n" not in str(info.value) and "stable-zero123" in str(info.value)


def test_guidance_eval_images(tiny_zero123_path, cond_image):
    guidance = make_guidance("stable-zero123-guidance", tiny_zero123_path, cond_image)
    batch = {
        "elevation": torch.tensor([0.0, 20.0]),
        "azimuth": torch.tensor([30.0, -30.0]),
        "camera_distances": torch.full([B], 1.2),
    }
    out = guidance(torch.rand(B, 16, 16, 3), **batch, guidance_eval=True)
    for key in ("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final"):
        assert out["eval"][key].shape == (B, 16, 16, 3)
    # the noise levels are those of the sampled timesteps, whose mean the call reports
    levels = torch.tensor(out["eval"]["noise_levels"])
    t = torch.argmin((1 - guidance.alphas[None, :] - levels[:, None]).abs(), dim=1)
    assert levels.tolist() == pytest.approx([float(1 - guidance.alphas[i]) for i in t])
    assert float(out["timestep"]) == pytest.approx(float(t.float().mean()))
