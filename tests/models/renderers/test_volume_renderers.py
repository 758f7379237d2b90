"""Volume renderers against closed-form answers on analytic fields (constant-density slab and
sphere, an SDF sphere), with test-local geometry/material/background classes."""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
import threestudio.kernels.ray_marching as estimators
from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseImplicitGeometry
from threestudio.models.materials.base import BaseMaterial

BG = (0.2, 0.4, 0.6)
FG = (0.9, 0.1, 0.3)


class AnalyticDensity(BaseImplicitGeometry):
    """Constant density ``exp(log_sigma)`` inside a shape ("slab": |x| < half_width; "sphere":
    |p| < radius; "blob": a smooth Gaussian), zero elsewhere; features are a constant colour."""

    @dataclass
    class Config(BaseImplicitGeometry.Config):
        shape: str = "slab"
        sigma: float = 2.0
        size: float = 0.3

    cfg: Config

    def configure(self):
        super().configure()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(self.cfg.sigma)))

    def forward_density(self, points):
        if self.cfg.shape == "slab":
            inside = (points[..., :1].abs() < self.cfg.size).float()
        elif self.cfg.shape == "sphere":
            inside = (points.norm(dim=-1, keepdim=True) < self.cfg.size).float()
        else:  # blob
            inside = torch.exp(-(points**2).sum(-1, keepdim=True) / (2 * self.cfg.size**2))
        return self.log_sigma.exp() * inside

    def forward(self, points, output_normal=False):
        density = self.forward_density(points)
        out = {"density": density, "features": torch.tensor(FG).expand(points.shape[0], 3)}
        if output_normal:
            out["normal"] = F.normalize(points, dim=-1)
        return out


class AnalyticSDF(BaseImplicitGeometry):
    @dataclass
    class Config(BaseImplicitGeometry.Config):
        sphere_radius: float = 0.5

    cfg: Config

    def forward_sdf(self, points):
        return points.norm(dim=-1, keepdim=True) - self.cfg.sphere_radius

    def forward(self, points, output_normal=False):
        return {
            "sdf": self.forward_sdf(points),
            "features": torch.tensor(FG).expand(points.shape[0], 3),
            "normal": F.normalize(points, dim=-1),
        }


class FeatureColor(BaseMaterial):
    def forward(self, features, **kwargs):
        return features[..., :3]


class ConstantBackground(BaseBackground):
    def forward(self, dirs):
        return torch.tensor(BG).expand(*dirs.shape[:-1], 3)


def make(renderer_type, geometry, **cfg):
    return threestudio.find(renderer_type)(
        cfg, geometry=geometry, material=FeatureColor(), background=ConstantBackground()
    )


def parallel_rays(n=16, extent=0.9, x0=-2.0):
    """An orthographic view along +x: ray origins on the plane x = x0 over [-extent, extent]^2."""
    s = torch.linspace(-extent, extent, n)
    yy, zz = torch.meshgrid(s, s, indexing="ij")
    rays_o = torch.stack([torch.full_like(yy, x0), yy, zz], -1)[None]
    rays_d = torch.tensor([1.0, 0.0, 0.0]).expand_as(rays_o).contiguous()
    return rays_o, rays_d, torch.zeros(1, 3)


def render(renderer, rays, **kw):
    rays_o, rays_d, lights = rays
    return renderer(rays_o, rays_d, lights, **kw)


def fill_grid(renderer):
    """The warm-up updates of the occupancy grid (every cell evaluated at a random point, 16
    times) that the first 256 training steps do."""
    renderer.train()
    for step in range(0, 256, 16):
        renderer.do_update_step(0, step)
    renderer.eval()


def slab_expectation(sigma, L, t0):
    opacity = 1 - math.exp(-sigma * L)
    depth = t0 * opacity + 1 / sigma - math.exp(-sigma * L) * (L + 1 / sigma)
    return opacity, depth


N_SAMPLES = 512
STEP = 1.732 * 2 / N_SAMPLES  # render_step_size for radius 1


def test_slab_opacity_and_depth_match_closed_form():
    sigma, half = 2.0, 0.3
    geo = AnalyticDensity({"shape": "slab", "sigma": sigma, "size": half})
    r = make("nerf-volume-renderer", geo, num_samples_per_ray=N_SAMPLES, grid_prune=False).eval()
    out = render(r, parallel_rays(8))
    opacity, depth = slab_expectation(sigma, 2 * half, 2.0 - half)
    # midpoint quadrature: each slab face is located to within half a step, so the path length
    # is off by at most one step and opacity by at most sigma * exp(-sigma L) * STEP
    tol_o = sigma * STEP
    assert (out["opacity"] - opacity).abs().max().item() < tol_o
    assert (out["depth"] - depth).abs().max().item() < 2.5 * STEP
    expected_rgb = torch.tensor(FG) * opacity + torch.tensor(BG) * (1 - opacity)
    assert (out["comp_rgb"] - expected_rgb).abs().max().item() < tol_o


def test_sphere_opacity_matches_chord_length():
    sigma, radius = 3.0, 0.6
    geo = AnalyticDensity({"shape": "sphere", "sigma": sigma, "size": radius})
    r = make("nerf-volume-renderer", geo, num_samples_per_ray=N_SAMPLES, grid_prune=False).eval()
    rays = parallel_rays(12)
    out = render(r, rays)
    b2 = (rays[0][0, ..., 1:] ** 2).sum(-1)
    chord = 2 * torch.sqrt((radius**2 - b2).clamp(min=0))
    expected = 1 - torch.exp(-sigma * chord)
    err = (out["opacity"][0, ..., 0] - expected).abs()
    # one-step error in the chord length as for the slab (the rim's slope makes it no worse)
    assert err.max().item() < sigma * STEP


def test_empty_space_gives_exact_background():
    geo = AnalyticDensity({"shape": "sphere", "sigma": 0.0 + 1e-30, "size": 0.5})
    for grid_prune in (False, True):
        r = make("nerf-volume-renderer", geo, num_samples_per_ray=64, grid_prune=grid_prune)
        fill_grid(r)
        out = render(r, parallel_rays(6))
        assert out["opacity"].abs().max().item() < 1e-20
        assert torch.equal(out["comp_rgb"], torch.tensor(BG).expand_as(out["comp_rgb"]))
    # rays that miss the scene box entirely
    rays_o, rays_d, lights = parallel_rays(4, x0=-2.0)
    rays_o = rays_o + torch.tensor([0.0, 5.0, 0.0])
    out = r(rays_o, rays_d, lights)
    assert torch.equal(out["comp_rgb"], torch.tensor(BG).expand_as(out["comp_rgb"]))


def test_occupancy_pruning_reduces_samples_not_image(capsys):
    geo = AnalyticDensity({"shape": "sphere", "sigma": 5.0, "size": 0.35})
    full = make("nerf-volume-renderer", geo, num_samples_per_ray=256, grid_prune=False).eval()
    pruned = make("nerf-volume-renderer", geo, num_samples_per_ray=256)
    fill_grid(pruned)
    rays = parallel_rays(16)
    out_full, out_pruned = render(full, rays), render(pruned, rays)
    n_full, n_pruned = int(out_full["num_samples"]), int(out_pruned["num_samples"])
    occupied = pruned.estimator.binaries.float().mean().item()
    with capsys.disabled():
        print(f"\n[pruning] samples {n_full} -> {n_pruned}, occupied cells {occupied:.3f}")
    assert n_pruned < 0.2 * n_full
    # dropped samples have alpha < 0.01 or transmittance < 1e-4: bounded image change
    assert (out_full["comp_rgb"] - out_pruned["comp_rgb"]).abs().max().item() < 0.02
    assert (out_full["opacity"] - out_pruned["opacity"]).abs().max().item() < 0.02


def test_importance_and_proposal_reproduce_stratified_on_smooth_scene():
    geo = AnalyticDensity({"shape": "blob", "sigma": 8.0, "size": 0.25})
    rays = parallel_rays(10)
    ref = render(
        make("nerf-volume-renderer", geo, num_samples_per_ray=1024, grid_prune=False).eval(), rays
    )
    imp = make(
        "nerf-volume-renderer",
        geo,
        estimator="importance",
        num_samples_per_ray=48,
        num_samples_per_ray_importance=32,
        near_plane=1.0,  # the rays cross the [-1, 1] box for t in [1, 3]
        far_plane=3.0,
    ).eval()
    out = render(imp, rays)
    assert (out["opacity"] - ref["opacity"]).abs().max().item() < 0.01
    hit = ref["opacity"] > 0.05
    assert (out["depth"] - ref["depth"])[hit].abs().max().item() < 0.02
    # a proposal network trained on its interlevel loss: the loss falls and the render matches
    torch.manual_seed(0)
    prop = make(
        "nerf-volume-renderer",
        geo,
        estimator="proposal",
        num_samples_per_ray=48,
        num_samples_per_ray_proposal=32,
        near_plane=1.0,
        far_plane=3.0,
        proposal_network_config={
            "n_input_dims": 3,
            "n_output_dims": 1,
            "encoding_config": {"otype": "Frequency", "n_frequencies": 2},
            "network_config": {"otype": "VanillaMLP", "n_neurons": 32, "n_hidden_layers": 1},
        },
        prop_optimizer_config={"name": "Adam", "args": {"lr": 2e-2}},
    )
    prop.train()
    losses = []
    for step in range(60):
        prop.do_update_step(0, step)
        render(prop, rays)
        prop.do_update_step_end(0, step)
        losses.append(prop.last_proposal_loss.item())
    assert losses[-1] < 0.1 * losses[0]
    prop.eval()
    out = render(prop, rays)
    assert (out["opacity"] - ref["opacity"]).abs().max().item() < 0.01
    assert (out["depth"] - ref["depth"])[hit].abs().max().item() < 0.02


@pytest.mark.parametrize("near,far", [(1.5, 2.5), (0.5, 3.5)])
def test_importance_samples_lie_between_near_and_far_planes(near, far):
    # as the established renderer: the importance estimator samples [near_plane, far_plane],
    # not the ray-box interval ([1, 3] for these rays)
    geo = AnalyticDensity({"shape": "blob", "sigma": 8.0, "size": 0.25})
    r = make(
        "nerf-volume-renderer",
        geo,
        estimator="importance",
        num_samples_per_ray=16,
        num_samples_per_ray_importance=8,
        near_plane=near,
        far_plane=far,
    )
    rays_o, rays_d, _ = parallel_rays(4)
    for mode in (r.train, r.eval):
        mode()
        _, t_starts, t_ends = r.sample(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))
        assert t_starts.min().item() >= near - 1e-6 and t_ends.max().item() <= far + 1e-6
        assert t_starts.min().item() < near + 0.2 and t_ends.max().item() > far - 0.2


@pytest.mark.parametrize("use_volsdf", [False, True])
def test_neus_sphere_silhouette_and_depth(use_volsdf):
    radius = 0.5
    r = make(
        "neus-volume-renderer",
        AnalyticSDF({"sphere_radius": radius}),
        num_samples_per_ray=N_SAMPLES,
        # inv_std = exp(10 v): 403 for NeuS; VolSDF clamps it at 80, so 55 keeps it learnable
        learned_variance_init=0.4 if use_volsdf else 0.6,
        use_volsdf=use_volsdf,
    )
    fill_grid(r)
    rays = parallel_rays(16)
    out = render(r, rays)
    b = rays[0][0, ..., 1:].norm(dim=-1)
    opacity, depth = out["opacity"][0, ..., 0], out["depth"][0, ..., 0]
    inside, outside = b < radius - 0.05, b > radius + 0.05
    assert inside.sum() > 20 and outside.sum() > 20
    assert opacity[inside].min().item() > 0.98
    assert opacity[outside].max().item() < 1e-3
    analytic = 2.0 - torch.sqrt(radius**2 - b[inside] ** 2)
    assert (depth[inside] - analytic).abs().max().item() < 0.02
    assert "comp_normal" in out
    # the learned sharpness receives a finite, non-zero gradient
    (out["opacity"] * (1 - out["opacity"])).sum().backward()
    grad = r.variance._inv_std.grad
    assert grad is not None and torch.isfinite(grad) and grad.abs() > 0


def test_gradients_reach_density_parameter():
    geo = AnalyticDensity({"shape": "slab", "sigma": 2.0, "size": 0.3})
    r = make("nerf-volume-renderer", geo, num_samples_per_ray=256, grid_prune=False).train()
    out = render(r, parallel_rays(4))
    out["opacity"].sum().backward()
    # d opacity / d log_sigma = sigma L exp(-sigma L) per ray
    L = 0.6
    expected = 16 * 2.0 * L * math.exp(-2.0 * L)
    assert geo.log_sigma.grad is not None
    assert abs(geo.log_sigma.grad.item() - expected) < 0.05 * expected
    for key in ("weights", "t_dirs", "t_points", "t_intervals", "ray_indices", "points"):
        assert key in out


def test_chunked_eval_equals_unchunked():
    geo = AnalyticDensity({"shape": "blob", "sigma": 6.0, "size": 0.3})
    whole = make("nerf-volume-renderer", geo, num_samples_per_ray=128, eval_chunk_size=0)
    fill_grid(whole)
    chunked = make("nerf-volume-renderer", geo, num_samples_per_ray=128, eval_chunk_size=100)
    chunked.load_state_dict(whole.state_dict())  # the same occupancy grid
    chunked.eval()
    outs = [render(whole, parallel_rays(8)), render(chunked, parallel_rays(8))]
    assert int(outs[0]["num_samples"]) > 300  # several chunks
    for key in ("comp_rgb", "opacity", "depth", "z_variance"):
        assert torch.allclose(outs[0][key], outs[1][key], atol=1e-6), key


def test_grid_state_dict_round_trip_and_step_updates():
    geo = AnalyticDensity({"shape": "sphere", "sigma": 5.0, "size": 0.35})
    r = make("nerf-volume-renderer", geo, num_samples_per_ray=128)
    fill_grid(r)
    sd = r.state_dict()
    assert "estimator.binaries" in sd and "estimator.occs" in sd
    r2 = make("nerf-volume-renderer", geo, num_samples_per_ray=128)
    r2.load_state_dict(sd)
    r2.eval()
    a, b = render(r, parallel_rays(8)), render(r2, parallel_rays(8))
    assert torch.equal(a["comp_rgb"], b["comp_rgb"])
    # off-cycle steps (not a multiple of 16) and eval mode leave the grid alone
    before = r.estimator.occs.clone()
    r.train()
    r.do_update_step(0, 3)
    r.eval()
    r.do_update_step(0, 16)
    assert torch.equal(before, r.estimator.occs)


def test_patch_renderer_pastes_full_resolution_patch():
    geo = AnalyticDensity({"shape": "sphere", "sigma": 4.0, "size": 0.5})
    base_cfg = {"num_samples_per_ray": 64, "grid_prune": False, "randomized": False}
    r = make(
        "patch-renderer",
        geo,
        patch_size=8,
        global_downsample=4,
        base_renderer_type="nerf-volume-renderer",
        base_renderer=base_cfg,
    )
    direct = make("nerf-volume-renderer", geo, **base_cfg).eval()
    rays = parallel_rays(16)
    r.train()
    out = render(r, rays)
    y0, x0 = out["patch_origin"]
    full = render(direct, rays)
    assert out["comp_rgb"].shape == (1, 16, 16, 3)
    patch = out["comp_rgb"][:, y0 : y0 + 8, x0 : x0 + 8]
    assert torch.allclose(patch, full["comp_rgb"][:, y0 : y0 + 8, x0 : x0 + 8], atol=1e-5)
    r.eval()
    assert torch.allclose(render(r, rays)["comp_rgb"], full["comp_rgb"], atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's kernels need CUDA")
def test_nerfacc_cuda_backend_matches_pure_torch():
    if not estimators._nerfacc_cuda_loads():
        pytest.skip("nerfacc's CUDA extension does not load")
    geo = AnalyticDensity({"shape": "sphere", "sigma": 3.0, "size": 0.5}).cuda()
    r = make("nerf-volume-renderer", geo, num_samples_per_ray=256).cuda()
    r.material.cuda()
    fill_grid(r)
    rays = [t.cuda() for t in parallel_rays(16)]
    out_cuda = render(r, rays)
    estimators._FORCE_TORCH_BACKEND = True
    try:
        out_torch = render(r, rays)
    finally:
        estimators._FORCE_TORCH_BACKEND = False
    for key in ("opacity", "depth", "comp_rgb"):
        assert (out_cuda[key] - out_torch[key]).abs().max().item() < 0.02, key


def test_config_errors_name_the_key():
    from threestudio.utils.errors import ConfigError

    geo = AnalyticDensity({})
    with pytest.raises(ConfigError, match="estimator.*'occgird'"):
        make("nerf-volume-renderer", geo, estimator="occgird")
    with pytest.raises(ConfigError, match="proposal_network_config"):
        make("nerf-volume-renderer", geo, estimator="proposal")
    with pytest.raises(ConfigError, match="base_renderer_type"):
        make("patch-renderer", geo)


def test_sampling_jitter_follows_training_flag_set_directly():
    """Lightning restores modes after validation by assigning ``.training`` (no ``train()``
    call): stratified jitter must come back with it."""
    import threestudio

    for name in ("nerf-volume-renderer", "neus-volume-renderer"):
        cls = threestudio.find(name)
        renderer = cls.__new__(cls)
        torch.nn.Module.__init__(renderer)
        renderer.cfg = cls.Config(randomized=True)
        renderer.training = False
        assert renderer.randomized is False
        renderer.training = True
        assert renderer.randomized is True
        renderer.cfg = cls.Config(randomized=False)
        assert renderer.randomized is False


def test_proposal_scheduler_config_builds_chained_schedulers():
    """prop_scheduler_config goes through the systems' scheduler parser: the published propnet
    recipe chains a LinearLR warm-up (start_factor 0.01 over 100 steps) under ChainedScheduler;
    a plain scheduler works too."""
    geo = AnalyticDensity({"shape": "blob", "sigma": 8.0, "size": 0.25})
    proposal = {
        "estimator": "proposal",
        "num_samples_per_ray": 8,
        "num_samples_per_ray_proposal": 8,
        "near_plane": 1.0,
        "far_plane": 3.0,
        "proposal_network_config": {
            "n_input_dims": 3,
            "n_output_dims": 1,
            "encoding_config": {"otype": "Frequency", "n_frequencies": 1},
            "network_config": {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1},
        },
        "prop_optimizer_config": {"name": "Adam", "args": {"lr": 1e-2}},
    }
    chained = make(
        "nerf-volume-renderer",
        geo,
        **proposal,
        prop_scheduler_config={
            "name": "ChainedScheduler",
            "schedulers": [
                {"name": "LinearLR", "args": {"start_factor": 0.01, "total_iters": 100}}
            ],
        },
    )
    assert isinstance(chained.prop_scheduler, torch.optim.lr_scheduler.ChainedScheduler)
    lr = chained.prop_scheduler.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(1e-4)
    chained.prop_scheduler.step()
    # LinearLR: factor 0.01 + 0.99 * step / 100
    assert chained.prop_scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.0199)
    plain = make(
        "nerf-volume-renderer",
        geo,
        **proposal,
        prop_scheduler_config={"name": "StepLR", "args": {"step_size": 1, "gamma": 0.5}},
    )
    plain.prop_scheduler.step()
    assert plain.prop_scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
