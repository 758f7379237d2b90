"""Score Jacobian Chaining's own parts against hand computations: the emptiness loss of a known
grid and its weight schedule, the depth prior, the SJC score as it reaches the rendered latent
image (a monkeypatched noise prediction in place of the UNet), and the latents the VAE decodes
with and without subpixel rendering, pixel by pixel."""

import math
from dataclasses import dataclass

import pytest
import torch

import threestudio
from tests.tiny_pipelines import build_tiny_sd
from threestudio.systems.sjc import center_depth_loss, emptiness_loss
from threestudio.utils.base import BaseObject

SIGMA = 2.0  # the grid's constant density
N_SAMPLES = 64  # samples per ray over the box diagonal (step 1.732 * 2 / 64)


@threestudio.register("test-sjc-stub-decoder")
class StubDecoder(BaseObject):
    """Stands in for the guidance's VAE: 'decodes' latents by keeping their first 3 channels."""

    @dataclass
    class Config(BaseObject.Config):
        latent_size: int = 8

    cfg: Config
    built = 0

    def configure(self) -> None:
        StubDecoder.built += 1
        self.latent_size = self.cfg.latent_size

    def decode_latents(self, latents):
        return latents[:, :3]


def sjc_system(loss=None, guidance_type="test-sjc-stub-decoder", guidance=None, subpixel=True):
    cfg = {
        "subpixel_rendering": subpixel,
        "geometry_type": "volume-grid",
        "geometry": {
            "grid_size": (4, 4, 4),
            "normal_type": None,
            "density_bias": -1.0,
            "n_feature_dims": 4,
        },
        "material_type": "no-material",
        "material": {"n_output_dims": 4, "color_activation": "none"},
        "background_type": "textured-background",
        "background": {"n_output_dims": 4, "color_activation": "none", "height": 4, "width": 4},
        "renderer_type": "nerf-volume-renderer",
        "renderer": {"num_samples_per_ray": N_SAMPLES, "grid_prune": False, "randomized": False},
        "guidance_type": guidance_type,
        "guidance": guidance or {},
        "loss": loss
        or {
            "lambda_sds": 1.0,
            "lambda_emptiness": [5000, 1.0e4, 2.0e5, 5001],
            "emptiness_scale": 10,
            "lambda_depth": 0,
            "center_ratio": 0.78125,
        },
    }
    system = threestudio.find("sjc-system")(cfg)
    # a constant density: softplus(raw - 1) = SIGMA everywhere in the box
    system.geometry.grid.data[0] = 1.0 + math.log(math.expm1(SIGMA))
    system.geometry.grid.data[1:] = torch.linspace(-1, 1, 64).view(4, 4, 4)
    return system.train()


def camera_batch(n=8):
    """Rays along +x from the plane x = -2, all crossing the box [-1, 1]^3 for t in [1, 3]."""
    s = torch.linspace(-0.9, 0.9, n)
    yy, zz = torch.meshgrid(s, s, indexing="ij")
    rays_o = torch.stack([torch.full_like(yy, -2.0), yy, zz], -1)[None]
    rays_d = torch.tensor([1.0, 0.0, 0.0]).expand_as(rays_o).contiguous()
    zero = torch.zeros(1)
    return {
        "rays_o": rays_o,
        "rays_d": rays_d,
        "light_positions": torch.zeros(1, 3),
        "elevation": zero,
        "azimuth": zero,
        "camera_distances": zero + 2.0,
    }


def test_emptiness_loss_of_a_known_grid():
    system = sjc_system()
    out = system(camera_batch())
    # the samples of one ray: intervals [k, k + 1] * step whose midpoint lies in t in [1, 3)
    step = 1.732 * 2 / N_SAMPLES
    ks = [k for k in range(200) if 1.0 <= (k + 0.5) * step < 3.0]
    assert out["weights"].shape[0] == 64 * len(ks)  # every one of the 8 x 8 rays alike
    alpha = 1 - math.exp(-SIGMA * step)
    weights = [math.exp(-SIGMA * step * j) * alpha for j in range(len(ks))]
    expected = sum(math.log(1 + 10 * w) for w in weights) / len(weights)
    loss = system.regularizers(out)["loss_emptiness"]
    assert abs(float(loss) - expected) < 1e-5
    torch.testing.assert_close(loss, emptiness_loss(out["weights"], 10.0))


def test_emptiness_weight_schedule():
    system = sjc_system()
    # [5000, 1e4, 2e5, 5001]: 1e4 up to step 5000, 2e5 from step 5001 on
    for step, weight in [(0, 1.0e4), (5000, 1.0e4), (5001, 2.0e5), (9999, 2.0e5)]:
        system.set_resume_status(0, step)
        assert system.lambda_of("emptiness") == pytest.approx(weight)


def test_depth_prior_hand_values():
    # 8x8, centre ratio 0.5: the centre is the 4x4 block [2:6, 2:6]
    depth = torch.full((1, 8, 8, 1), 3.0)
    depth[:, 2:6, 2:6] = 1.0
    opaque = torch.ones_like(depth)
    # centre nearer than the border by 2: sign(-2) log 2
    torch.testing.assert_close(center_depth_loss(depth, opaque, 0.5), torch.tensor(-math.log(2)))
    # an empty border (opacity 0, rendered depth 0) sits at the background depth 10:
    # centre 1 - border 10
    border_empty = torch.zeros_like(depth)
    border_empty[:, 2:6, 2:6] = 1.0
    torch.testing.assert_close(
        center_depth_loss(depth * border_empty, border_empty, 0.5), torch.tensor(-math.log(9))
    )
    # the centre farther away (depth 3 against 1): log 2, and descending pulls it nearer
    far_depth = (4.0 - depth).requires_grad_(True)
    loss = center_depth_loss(far_depth, opaque, 0.5)
    torch.testing.assert_close(loss.detach(), torch.tensor(math.log(2)))
    loss.backward()
    assert (far_depth.grad[:, 2:6, 2:6] > 0).all() and (far_depth.grad[:, :2] < 0).all()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sjc_tiny_sd"))


class ZeroPrompts:
    def get_text_embeddings(self, elevation, azimuth, camera_distances, view_dependent=True):
        return torch.zeros(2 * elevation.shape[0], 7, 32)  # [cond; uncond]


def test_sjc_score_reaches_the_rendered_latents(tiny_sd, monkeypatch):
    loss = {"lambda_sds": 1.0, "lambda_emptiness": 0.0, "emptiness_scale": 10, "lambda_depth": 0}
    guidance_cfg = {
        "pretrained_model_name_or_path": tiny_sd,
        "half_precision_weights": False,
        "guidance_scale": 100.0,
        "use_sjc": True,
        "var_red": True,
        "min_step_percent": 0.5,  # t = 500 exactly
        "max_step_percent": 0.5,
    }
    system = sjc_system(loss, "stable-diffusion-guidance", guidance_cfg)
    guidance = threestudio.find("stable-diffusion-guidance")(guidance_cfg)
    system.guidance, system.prompt_utils = guidance, ZeroPrompts()

    # UNet-free: the noise prediction is 0.5 x for the prompt, 0.2 x without it
    def fake_unet(x, t, encoder_hidden_states):
        assert torch.equal(t, torch.full_like(t, 500))
        half = x.shape[0] // 2
        return torch.cat([0.5 * x[:half], 0.2 * x[half:]])

    monkeypatch.setattr(guidance, "forward_unet", fake_unet)
    noise = torch.linspace(-1, 1, 4 * 8 * 8).view(1, 4, 8, 8)
    monkeypatch.setattr(torch, "randn_like", lambda x: noise.to(x))
    rendered = {}
    forward = system.forward

    def keep_render(batch):
        out = forward(batch)
        out["comp_rgb"].retain_grad()
        rendered["rgb"] = out["comp_rgb"]
        return out

    monkeypatch.setattr(system, "forward", keep_render)
    system.training_step(camera_batch(16), 0)["loss"].backward()

    # by hand: the 16x16 render is the latent image, averaged 2x2 to the UNet's 8x8
    rgb = rendered["rgb"].detach()
    y = rgb.permute(0, 3, 1, 2).reshape(1, 4, 8, 2, 8, 2).mean(dim=(3, 5))
    a = float(guidance.scheduler.alphas_cumprod[500])
    sigma = math.sqrt((1 - a) / a)
    zs = y + sigma * noise
    eps = zs / math.sqrt(1 + sigma**2)
    eps_hat = 0.5 * eps + 100.0 * (0.5 * eps - 0.2 * eps)
    score_grad = -((zs - sigma * eps_hat) - y) / sigma  # var_red: against the clean latents
    expected = score_grad.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4
    torch.testing.assert_close(
        rendered["rgb"].grad.permute(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-5
    )


def test_decoded_latents_pixel_by_pixel():
    StubDecoder.built = 0
    render = torch.arange(32 * 32 * 4, dtype=torch.float32).view(1, 32, 32, 4) ** 0.5
    for subpixel in (True, False):
        system = sjc_system(subpixel=subpixel)
        latents = system.decoder_input(render)  # builds the decoder (no fit: --test)
        if subpixel:
            # twice the latent size: 16x16, each latent the mean of a 2x2 block of the render
            assert latents.shape == (1, 4, 16, 16)
            for i in range(16):
                for j in range(16):
                    block = render[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                    torch.testing.assert_close(latents[0, :, i, j], block.mean(dim=(0, 1)))
        else:
            # the latent size: 8x8, bilinear at 4i + 1.5, the mean of the block's middle 2x2
            assert latents.shape == (1, 4, 8, 8)
            for i in range(8):
                for j in range(8):
                    block = render[0, 4 * i + 1 : 4 * i + 3, 4 * j + 1 : 4 * j + 3]
                    torch.testing.assert_close(latents[0, :, i, j], block.mean(dim=(0, 1)))
        decoded = system.decode(render)
        torch.testing.assert_close(decoded, latents[:, :3].permute(0, 2, 3, 1))
    assert StubDecoder.built == 2  # once per system, reused by decode()
