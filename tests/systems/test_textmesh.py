"""TextMesh's own term, the eikonal loss: the function on known gradient fields, and the system's
regulariser on what the NeuS renderer returns for an exact and a scaled sphere SDF."""

import pytest
import torch

import threestudio
from threestudio.systems.textmesh import eikonal_loss
from threestudio.utils.errors import ConfigError

RADIUS = 0.5


def sphere_sdf_grad(points: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    points = points.clone().requires_grad_(True)
    sdf = scale * (points.norm(dim=-1, keepdim=True) - RADIUS)
    return torch.autograd.grad(sdf.sum(), points)[0]


def test_eikonal_loss_on_exact_and_scaled_gradients():
    points = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0))
    # an exact distance function has a unit gradient everywhere
    assert eikonal_loss(sphere_sdf_grad(points)) < 1e-12
    # f = 3 (|p| - r): |grad f| = 3, so (3 - 1)^2 = 4 at every point
    torch.testing.assert_close(eikonal_loss(sphere_sdf_grad(points, 3.0)), torch.tensor(4.0))
    # half the points at |grad| = 2, half at 0.5: (1 + 0.25) / 2
    grads = torch.cat([torch.full((10, 3), 2.0 / 3**0.5), torch.full((10, 3), 0.5 / 3**0.5)])
    torch.testing.assert_close(eikonal_loss(grads), torch.tensor(0.625))


def textmesh_system(loss=None):
    cfg = {
        "geometry_type": "implicit-sdf",
        "geometry": {
            "radius": 1.0,
            "normal_type": "finite_difference",
            "finite_difference_normal_eps": 1.0e-3,
            "sdf_bias": "sphere",
            "sdf_bias_params": RADIUS,
            "pos_encoding_config": {"otype": "HashGrid", "n_levels": 2, "log2_hashmap_size": 10},
        },
        "material_type": "no-material",
        "background_type": "solid-color-background",
        "renderer_type": "neus-volume-renderer",
        "renderer": {"num_samples_per_ray": 64, "grid_prune": False, "randomized": False},
        "loss": {"lambda_sds": 1.0, "lambda_eikonal": 1000.0} if loss is None else loss,
    }
    system = threestudio.find("textmesh-system")(cfg)
    # the network adds nothing: the field is exactly the sdf_bias sphere |p| - r
    for param in system.geometry.sdf_network.parameters():
        param.data.zero_()
    return system.train()


def render_batch(n=8):
    """An orthographic view along +x whose rays pass 0.2..0.8 from the centre (the forward
    differences of |p| are accurate away from the origin)."""
    s = torch.linspace(0.2, 0.8, n)
    yy, zz = torch.meshgrid(s, s, indexing="ij")
    rays_o = torch.stack([torch.full_like(yy, -2.0), yy, zz], -1)[None]
    rays_d = torch.tensor([1.0, 0.0, 0.0]).expand_as(rays_o).contiguous()
    return {"rays_o": rays_o, "rays_d": rays_d, "light_positions": torch.zeros(1, 3)}


def test_eikonal_term_of_rendered_samples(monkeypatch):
    system = textmesh_system()
    out = system(render_batch())
    assert out["sdf_grad"].shape[0] == out["weights"].shape[0] > 1000  # one per sample
    # the sphere SDF itself: the eikonal term vanishes (up to the forward differences' error)
    assert float(system.regularizers(out)["loss_eikonal"]) < 1e-5

    # the same field scaled by 2 (both in forward() and in the offset queries): (2 - 1)^2 = 1
    geometry = system.geometry
    shifted = geometry.get_shifted_sdf
    monkeypatch.setattr(geometry, "get_shifted_sdf", lambda p, sdf: 2.0 * shifted(p, sdf))
    out = system(render_batch())
    assert abs(float(system.regularizers(out)["loss_eikonal"]) - 1.0) < 0.01


def test_eikonal_weight_zero_skips_the_term_and_needs_no_gradient():
    system = textmesh_system({"lambda_sds": 1.0, "lambda_eikonal": 0.0})
    out = system(render_batch(2))
    assert "loss_eikonal" not in system.regularizers(out)
    out.pop("sdf_grad")
    system = textmesh_system()
    with pytest.raises(ConfigError, match="lambda_eikonal"):
        system.regularizers(out)
