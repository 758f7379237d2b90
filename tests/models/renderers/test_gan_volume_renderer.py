"""gan-volume-renderer: the quarter-resolution volume render (the same as nerf-volume-renderer's
on the same rays), the stride-8 lattice render, the generator levels, and the networks and
hinge losses of threestudio.utils.GAN."""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseImplicitGeometry
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.errors import ConfigError
from threestudio.utils.GAN.discriminator import NLayerDiscriminator, weights_init
from threestudio.utils.GAN.distribution import DiagonalGaussianDistribution
from threestudio.utils.GAN.loss import discriminator_loss, generator_loss, hinge_d_loss

N_FEATURES = 11  # RGB + the latent's mean and log-variance (4 + 4)
FG = torch.tensor([0.9, 0.1, 0.3] + [0.5, -0.5, 0.25, 0.0] + [-1.0, -2.0, 0.0, -0.5])
BG = torch.tensor([0.2, 0.4, 0.6] + [0.0] * 8)
BASE = {"num_samples_per_ray": 64, "grid_prune": False, "randomized": False}


class Sphere(BaseImplicitGeometry):
    """Constant density inside a sphere of radius 0.5; constant 11-channel features."""

    @dataclass
    class Config(BaseImplicitGeometry.Config):
        n_channels: int = N_FEATURES

    cfg: Config

    def configure(self):
        super().configure()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(4.0)))

    def forward_density(self, points):
        return self.log_sigma.exp() * (points.norm(dim=-1, keepdim=True) < 0.5).float()

    def forward(self, points, output_normal=False):
        features = FG[: self.cfg.n_channels].expand(points.shape[0], -1)
        return {"density": self.forward_density(points), "features": features}


class Passthrough(BaseMaterial):
    def forward(self, features, **kwargs):
        return features


class Constant(BaseBackground):
    @dataclass
    class Config(BaseBackground.Config):
        n_channels: int = N_FEATURES

    cfg: Config

    def forward(self, dirs):
        return BG[: self.cfg.n_channels].expand(*dirs.shape[:-1], -1)


def renderers(n_channels=N_FEATURES):
    geo = Sphere({"n_channels": n_channels})
    parts = dict(
        geometry=geo, material=Passthrough(), background=Constant({"n_channels": n_channels})
    )
    gan = threestudio.find("gan-volume-renderer")(
        {"base_renderer_type": "nerf-volume-renderer", "base_renderer": BASE}, **parts
    )
    direct = threestudio.find("nerf-volume-renderer")(BASE, **parts)
    return gan, direct.eval()


def ray_grid(s: torch.Tensor, x0: float = -2.0):
    """Rays along +x from the plane x = x0 through (y, z) = (s_i, s_j)."""
    yy, zz = torch.meshgrid(s, s, indexing="ij")
    rays_o = torch.stack([torch.full_like(yy, x0), yy, zz], -1)[None]
    rays_d = torch.tensor([1.0, 0.0, 0.0]).expand_as(rays_o).contiguous()
    return rays_o, rays_d


N = 32
S = torch.linspace(-0.9, 0.9, N)


def test_eval_outputs_and_the_quarter_resolution_render():
    torch.manual_seed(0)
    gan, direct = renderers()
    gan.eval()
    rays_o, rays_d = ray_grid(S)
    with torch.no_grad():
        out = gan(rays_o, rays_d, torch.zeros(1, 3))
        again = gan(rays_o, rays_d, torch.zeros(1, 3))
    assert out["comp_gan_rgb"].shape == (1, N, N, 3)
    assert out["comp_rgb"].shape == (1, N, N, 3)
    assert out["comp_lr_rgb"].shape == (1, N // 4, N // 4, 3)
    assert out["opacity"].shape == (1, N // 4, N // 4, 1)
    assert out["generator_level"] == 0
    assert 0 <= out["comp_gan_rgb"].min() and out["comp_gan_rgb"].max() <= 1
    # without multi-level guidance the latent is the posterior's mean: deterministic
    assert torch.equal(out["comp_gan_rgb"], again["comp_gan_rgb"])

    # bilinear 4x downsampling (half-pixel centres) of a linear ray grid samples it at input
    # index 4i + 1.5: the rays of that grid, rendered directly
    step = (S[1] - S[0]).item()
    s_low = S[0] + (4 * torch.arange(N // 4) + 1.5) * step
    with torch.no_grad():
        low = direct(*ray_grid(s_low), torch.zeros(1, 3))
    assert torch.allclose(out["comp_lr_rgb"], low["comp_rgb"][..., :3], atol=1e-5)
    assert torch.allclose(out["opacity"], low["opacity"], atol=1e-5)
    # the latent's mean and log-variance are the rendered channels 3:7 and 7:11
    latent = low["comp_rgb"][..., 3:].permute(0, 3, 1, 2)
    assert torch.allclose(out["posterior"].mean, latent[:, :4], atol=1e-5)
    assert torch.allclose(out["posterior"].logvar, latent[:, 4:], atol=1e-5)
    # the sphere is there: the centre rays are (nearly) opaque, the corner rays miss it
    assert low["opacity"][0, 3, 3, 0] > 0.9 and low["opacity"][0, 0, 0, 0] < 1e-6
    # comp_rgb: that render upsampled to the full size
    up = F.interpolate(low["comp_rgb"][..., :3].permute(0, 3, 1, 2), (N, N), mode="bilinear")
    assert torch.allclose(out["comp_rgb"], up.permute(0, 2, 3, 1), atol=1e-5)


def test_training_renders_the_stride_8_lattice_at_full_resolution():
    gan, direct = renderers()
    gan.base_renderer.eval()  # no jitter: comparable with the direct render
    rays_o, rays_d = ray_grid(S)
    gt = torch.rand(1, N, N, 3)
    torch.manual_seed(3)
    draws = [
        int(torch.randint(0, 3, (1,))),
        int(torch.randint(0, 8, (1,))),
        int(torch.randint(0, 8, (1,))),
    ]
    torch.manual_seed(3)
    out = gan(rays_o, rays_d, torch.zeros(1, 3), gt_rgb=gt, multi_level_guidance=True)
    level, ox, oy = draws
    assert out["generator_level"] == level
    assert torch.equal(out["comp_gt_rgb"], gt[:, oy::8, ox::8])
    assert out["comp_int_rgb"].shape == (1, N // 8, N // 8, 3)
    with torch.no_grad():
        lattice = direct(rays_o[:, oy::8, ox::8], rays_d[:, oy::8, ox::8], torch.zeros(1, 3))
    assert torch.allclose(out["comp_int_rgb"], lattice["comp_rgb"][..., :3], atol=1e-5)


def test_generator_levels_take_style_and_latent_from_where_they_should():
    gan, _ = renderers()
    rays_o, rays_d = ray_grid(S)
    seen = set()
    for seed in range(40):
        if seen == {0, 1, 2}:
            break
        torch.manual_seed(seed)
        gt = torch.rand(1, N, N, 3, requires_grad=True)
        gan.zero_grad()
        out = gan(rays_o, rays_d, torch.zeros(1, 3), gt_rgb=gt, multi_level_guidance=True)
        level = out["generator_level"]
        if level in seen:
            continue
        seen.add(level)
        out["comp_gan_rgb"].mean().backward()
        # level 0: the image depends on the render only; 1: the style code comes from the target
        # image; 2: the latent too, through the local encoder
        assert (gt.grad is None) == (level == 0), level
        local_grads = [p.grad for p in gan.local_encoder.parameters()]
        assert all(g is None for g in local_grads) == (level != 2), level
        expected_latent = (1, 4, N // 4, N // 4)
        assert out["posterior"].mean.shape == expected_latent
        assert gan.generator.conv_in.weight.grad.abs().sum() > 0
        assert gan.global_encoder.classifier[1].weight.grad.abs().sum() > 0
    assert seen == {0, 1, 2}


def test_channel_count_error_names_the_keys():
    gan, _ = renderers(n_channels=3)
    rays_o, rays_d = ray_grid(S)
    with pytest.raises(ConfigError, match="n_output_dims"):
        gan(rays_o, rays_d, torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="base_renderer_type"):
        threestudio.find("gan-volume-renderer")(
            {}, geometry=Sphere(), material=Passthrough(), background=Constant()
        )


def test_gaussian_kl_and_sampling():
    params = torch.zeros(2, 8, 3, 3)
    params[:, :4] = 1.0  # mean 1, log-variance 0: KL = 0.5 per element
    dist = DiagonalGaussianDistribution(params)
    assert torch.allclose(dist.kl(), torch.full((2,), 0.5 * 4 * 9))
    assert torch.equal(dist.mode(), torch.ones(2, 4, 3, 3))
    assert torch.allclose(
        DiagonalGaussianDistribution(torch.zeros(1, 8, 2, 2)).kl(), torch.zeros(1)
    )
    torch.manual_seed(0)
    wide = torch.zeros(1, 8, 64, 64)
    wide[:, 4:] = math.log(4.0)  # std 2
    assert abs(DiagonalGaussianDistribution(wide).sample().std().item() - 2.0) < 0.1


def test_hinge_losses_by_hand():
    assert hinge_d_loss(torch.tensor([2.0]), torch.tensor([-2.0])) == 0
    assert hinge_d_loss(torch.zeros(3), torch.zeros(3)) == 1
    assert torch.isclose(
        hinge_d_loss(torch.tensor([0.5]), torch.tensor([0.25])), torch.tensor(0.875)
    )
    d = nn.Conv2d(3, 1, 1, bias=False)
    nn.init.constant_(d.weight, 1.0)  # logit: the channel sum
    real, fake = torch.full((1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), -0.5)
    assert torch.isclose(generator_loss(d, real, fake), torch.tensor(1.5))
    # real logits 1.5 (no loss), fake -1.5 (no loss)
    assert discriminator_loss(d, real, fake) == 0


def test_discriminator_learns_a_toy_split_and_the_generator_gets_its_gradient():
    torch.manual_seed(0)
    disc = NLayerDiscriminator(input_nc=3, ndf=16, n_layers=3).apply(weights_init)
    assert disc(torch.rand(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    # real: bright red-ish images; fake: dark blue-ish ones, both noisy
    real = torch.tensor([0.9, 0.2, 0.1])[None, :, None, None] + 0.1 * torch.rand(4, 3, 32, 32)
    fake_source = nn.Parameter(
        torch.tensor([0.1, 0.2, 0.9])[None, :, None, None].repeat(4, 1, 32, 32)
    )
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4)
    losses = []
    for _ in range(15):
        loss = discriminator_loss(disc, real, fake_source)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert fake_source.grad is None  # the discriminator loss does not reach the fakes
    assert losses[-1] < 0.5 * losses[0], losses
    # the generator side: its loss reaches the fake images, and pushing them along that gradient
    # raises the discriminator's score
    disc.eval()
    g_loss = generator_loss(disc, real, fake_source)
    g_loss.backward()
    assert fake_source.grad.abs().sum() > 0
    with torch.no_grad():
        moved = fake_source - 5.0 * fake_source.grad / fake_source.grad.abs().max()
        assert generator_loss(disc, real, moved) < g_loss
