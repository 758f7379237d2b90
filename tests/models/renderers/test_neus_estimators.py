"""neus-volume-renderer with each ``estimator`` against a sphere SDF: the silhouette and depth of
the analytic sphere, and the opacity and expected depth of the continuous NeuS / VolSDF model
along each ray (a 1D quadrature on 40k steps, independent of the renderer's sampling)."""

import math

import pytest
import torch

from tests.models.renderers.test_volume_renderers import (
    AnalyticSDF,
    fill_grid,
    make,
    parallel_rays,
    render,
)
from threestudio.utils.errors import ConfigError

RADIUS = 0.5
X0 = -2.0  # the rays start on the plane x = X0 and travel along +x: the centre is at t = 2


def continuous_model(b, inv_std, use_volsdf, t_max=4.0, n=40000):
    """Opacity and expected depth of a ray at impact parameter ``b`` (float64 quadrature).
    NeuS: alpha_i = max(0, (Phi(f_i) - Phi(f_i+1)) / Phi(f_i)) with Phi = sigmoid(s f), which
    tends to NeuS's continuous opaque density as the steps shrink. VolSDF: density
    s * LaplaceCDF_{1/s}(-f)."""
    t = torch.linspace(0.0, t_max, n + 1, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)[:, None]
    sdf = torch.sqrt((t - 2.0) ** 2 + b**2) - RADIUS
    t_mid = (t[1:] + t[:-1]) / 2
    if use_volsdf:
        f_mid = torch.sqrt((t_mid - 2.0) ** 2 + b**2) - RADIUS
        density = inv_std * (0.5 + 0.5 * f_mid.sign() * torch.expm1(-f_mid.abs() * inv_std))
        alpha = 1.0 - torch.exp(-density * (t_max / n))
    else:
        phi = torch.sigmoid(inv_std * sdf)
        alpha = ((phi[:, :-1] - phi[:, 1:]) / phi[:, :-1]).clamp(0.0, 1.0)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], -1), -1)
    weights = trans * alpha
    return weights.sum(-1), (weights * t_mid).sum(-1)


CASES = {
    # estimator, use_volsdf, learned_variance_init (inv_std = exp(10 v)), renderer keys.
    # Without pruning every sample of the box is composited, so the render can be compared with
    # the continuous model ray by ray, silhouette included
    "occgrid-neus": ("occgrid", False, 0.6, {"grid_prune": False}),
    "occgrid-volsdf": ("occgrid", True, 0.4, {"grid_prune": False}),
    # the published textmesh-if-importance sampling: 128 coarse + 64 fine samples in [near, far]
    "importance-volsdf": (
        "importance",
        True,
        0.4,
        {
            "num_samples_per_ray": 64,
            "num_samples_per_ray_importance": 128,
            "near_plane": 0.5,
            "far_plane": 3.5,
        },
    ),
    # occgrid with pruning (the published textmesh-if): skipped cells and dropped faint samples
    # change the silhouette's soft edge, so only the analytic sphere is checked
    "occgrid-neus-pruned": ("occgrid", False, 0.6, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sphere_opacity_and_depth_for_each_estimator(case):
    estimator, use_volsdf, variance_init, extra = CASES[case]
    renderer = make(
        "neus-volume-renderer",
        AnalyticSDF({"sphere_radius": RADIUS}),
        estimator=estimator,
        use_volsdf=use_volsdf,
        learned_variance_init=variance_init,
        **{"num_samples_per_ray": 512, **extra},
    )
    pruned = estimator == "occgrid" and extra.get("grid_prune", True)
    if pruned:
        fill_grid(renderer)
    renderer.eval()
    rays = parallel_rays(16, extent=0.9, x0=X0)
    with torch.no_grad():
        out = render(renderer, rays)
    b = rays[0][0, ..., 1:].norm(dim=-1).reshape(-1)
    opacity = out["opacity"].reshape(-1).double()
    depth = out["depth"].reshape(-1).double()
    assert torch.isclose(out["inv_std"], torch.tensor(math.exp(10 * variance_init)))

    # the analytic sphere: opaque inside the silhouette, empty outside, depth at the front cap
    inside, outside = b < RADIUS - 0.05, b > RADIUS + 0.1
    assert inside.sum() > 20 and outside.sum() > 20
    assert opacity[inside].min() > 0.98
    # unpruned, NeuS's 1e-5 alpha floor and VolSDF's soft edge leave a faint haze outside
    assert opacity[outside].max() < (1e-3 if pruned else 0.015)
    front = -X0 - torch.sqrt(RADIUS**2 - b[inside].double() ** 2)
    assert (depth[inside] - front).abs().max() < 0.02
    if pruned:
        return

    # the continuous model of the same field, ray by ray
    inv_std = math.exp(10 * variance_init)
    if use_volsdf:
        inv_std = min(inv_std, 80.0)  # VolSDF's clamp
    ref_opacity, ref_depth = continuous_model(b, inv_std, use_volsdf)
    assert (opacity - ref_opacity).abs().max() < 0.005
    # depth is the weighted sum of t (not normalised): compare it where the ray is opaque
    opaque = ref_opacity > 0.5
    assert (depth[opaque] - ref_depth[opaque]).abs().max() < 0.002


def test_importance_samples_every_ray_alike_between_the_planes():
    renderer = make(
        "neus-volume-renderer",
        AnalyticSDF({"sphere_radius": RADIUS}),
        estimator="importance",
        use_volsdf=True,
        num_samples_per_ray=16,
        num_samples_per_ray_importance=32,
        near_plane=0.5,
        far_plane=3.5,
    ).train()
    rays_o, rays_d, _ = parallel_rays(4)
    ray_indices, t_starts, t_ends = renderer.sample(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))
    # 32 coarse intervals merged with 16 fine samples: 48 intervals on each of the 16 rays
    assert torch.equal(torch.bincount(ray_indices), torch.full((16,), 48))
    assert t_starts.min() >= 0.5 and t_ends.max() <= 3.5
    assert (t_ends >= t_starts).all()


def test_estimator_config_errors_name_the_keys():
    geometry = AnalyticSDF({})
    with pytest.raises(ConfigError, match="renderer.estimator.*'proposal'"):
        make("neus-volume-renderer", geometry, estimator="proposal")
    with pytest.raises(ConfigError, match="use_volsdf"):
        make("neus-volume-renderer", geometry, estimator="importance")
