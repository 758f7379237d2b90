import pytest
import torch
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError


def make_grid(**overrides):
    cfg = {
        "grid_size": (4, 5, 6),
        "n_feature_dims": 2,
        "density_activation": "none",
        "density_bias": 0.0,
    }
    cfg.update(overrides)
    return threestudio.find("volume-grid")(cfg)


def test_voxel_centres_return_the_stored_values():
    torch.manual_seed(0)
    geo = make_grid()
    with torch.no_grad():
        geo.grid.normal_()
    centres = geo.voxel_centers()
    out = geo(centres.reshape(-1, 3))
    expected = geo.grid.detach().reshape(3, -1).T
    torch.testing.assert_close(out["density"], expected[:, :1])
    torch.testing.assert_close(out["features"], expected[:, 1:])
    # x indexes the first grid axis: stepping one voxel in x moves along it
    assert centres[1, 0, 0, 0] > centres[0, 0, 0, 0]
    assert centres[0, 1, 0, 1] > centres[0, 0, 0, 1]


def test_trilinear_interpolation_is_exact_for_affine_fields():
    geo = make_grid()
    centres = geo.voxel_centers()
    coef = torch.tensor([0.7, -1.3, 2.1])
    with torch.no_grad():
        geo.grid[0] = (centres * coef).sum(-1) + 0.5
    # any point inside the hull of the voxel centres (interpolation, not border clamping)
    lo, hi = centres.reshape(-1, 3).min(0).values, centres.reshape(-1, 3).max(0).values
    points = lo + torch.rand(200, 3) * (hi - lo)
    torch.testing.assert_close(
        geo.forward_density(points), (points * coef).sum(-1, keepdim=True) + 0.5
    )


def test_midpoint_between_voxels_is_their_mean():
    torch.manual_seed(1)
    geo = make_grid()
    with torch.no_grad():
        geo.grid.normal_()
    c = geo.voxel_centers()
    mid = (c[1, 2, 3] + c[2, 2, 3]) / 2
    expected = (geo.grid[:, 1, 2, 3] + geo.grid[:, 2, 2, 3]) / 2
    out = geo(mid[None])
    torch.testing.assert_close(out["density"][0], expected[:1])
    torch.testing.assert_close(out["features"][0], expected[1:])


def test_blob_bias_and_activation():
    geo = make_grid(density_bias="blob", density_activation="softplus", density_blob_scale=5.0)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.4]])
    expected = F.softplus(5.0 * (1 - points.norm(dim=-1, keepdim=True) / 0.5))
    torch.testing.assert_close(geo.forward_density(points), expected)
    assert "density_scale" in dict(geo.named_buffers())
    # a numeric bias makes the density scale learnable (DreamFusion)
    assert "density_scale" in dict(make_grid().named_parameters())


@pytest.mark.parametrize("normal_type", ["analytic", "finite_difference_laplacian"])
def test_normals_point_along_minus_density_gradient(normal_type):
    geo = make_grid(grid_size=(8, 8, 8), normal_type=normal_type, finite_difference_normal_eps=1e-3)
    centres = geo.voxel_centers()
    with torch.no_grad():
        geo.grid[0] = -(centres * torch.tensor([1.0, 2.0, -0.5])).sum(-1)
    points = torch.rand(20, 3) * 1.2 - 0.6
    out = geo(points, output_normal=True)
    expected = F.normalize(torch.tensor([1.0, 2.0, -0.5]), dim=0).expand_as(points)
    torch.testing.assert_close(out["normal"], expected, atol=1e-4, rtol=0)


def test_create_from_implicit_volume_reproduces_density():
    volume = threestudio.find("implicit-volume")(
        {
            "pos_encoding_config": {"otype": "Identity"},
            "mlp_network_config": {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1},
            "n_feature_dims": 2,
        }
    )
    grid = threestudio.find("volume-grid").create_from(
        volume, {"grid_size": (6, 6, 6), "n_feature_dims": 2, "density_bias": "blob"}
    )
    centres = grid.voxel_centers().reshape(-1, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            grid.forward_density(centres), volume.forward_density(centres), atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(
            grid.export(centres)["features"], volume.export(centres)["features"]
        )


def test_config_errors():
    with pytest.raises(ConfigError, match="density_bias"):
        make_grid(density_bias="gaussian")
    with pytest.raises(ConfigError, match="grid_sz"):
        make_grid(grid_sz=(2, 2, 2))
