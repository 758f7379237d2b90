import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError

TINY_MLP = {"otype": "VanillaMLP", "n_neurons": 16, "n_hidden_layers": 1}
IDENTITY_ENC = {"otype": "Identity"}


def make_volume(**overrides):
    cfg = {
        "radius": 1.0,
        "pos_encoding_config": IDENTITY_ENC,
        "mlp_network_config": TINY_MLP,
        "n_feature_dims": 3,
    }
    cfg.update(overrides)
    return threestudio.find("implicit-volume")(cfg)


class QuadraticField(nn.Module):
    """Takes the Identity encoding (x + 1) / 2 of world points in [-1, 1] and returns
    -(x^2 + 2 y^2 + 3 z^2) of the world point: the outward normal is (x, 2y, 3z) normalised."""

    def forward(self, enc):
        p = enc * 2 - 1
        return -(p[:, :1] ** 2 + 2 * p[:, 1:2] ** 2 + 3 * p[:, 2:3] ** 2)


def quadratic_normal(points):
    return F.normalize(points * torch.tensor([1.0, 2.0, 3.0]), dim=-1)


def zero_(module):
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


def test_magic3d_blob_density_matches_formula():
    geo = make_volume(density_bias="blob_magic3d", density_blob_scale=10.0, density_blob_std=0.5)
    zero_(geo.density_network)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.3, -0.4, 0.0], [0.0, 0.0, 0.9]])
    r = points.norm(dim=-1, keepdim=True)
    expected = F.softplus(10.0 * (1 - r / 0.5))
    out = geo(points)
    torch.testing.assert_close(out["density"], expected)
    assert out["features"].shape == (4, 3)
    torch.testing.assert_close(geo.forward_density(points), expected)


def test_dreamfusion_blob_density_matches_formula():
    geo = make_volume(
        density_bias="blob_dreamfusion",
        density_activation="exp",
        density_blob_scale=5.0,
        density_blob_std=0.2,
    )
    zero_(geo.density_network)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.1, 0.1, 0.1]])
    r2 = (points**2).sum(-1, keepdim=True)
    expected = torch.exp(5.0 * torch.exp(-0.5 * r2 / 0.2**2))
    torch.testing.assert_close(geo(points)["density"], expected)


def test_numeric_density_bias_and_batch_shapes():
    geo = make_volume(density_bias=-1.5, density_activation="none")
    zero_(geo.density_network)
    points = torch.rand(2, 5, 3) * 2 - 1
    out = geo(points, output_normal=False)
    assert out["density"].shape == (2, 5, 1)
    torch.testing.assert_close(out["density"], torch.full((2, 5, 1), -1.5))


def test_anneal_density_blob_std():
    geo = make_volume(
        density_bias="blob_magic3d",
        anneal_density_blob_std_config={
            "min_anneal_step": 100,
            "max_anneal_step": 200,
            "start_val": 0.5,
            "end_val": 0.3,
        },
    )
    zero_(geo.density_network)
    geo.do_update_step(0, 150)
    assert geo.density_blob_std == pytest.approx(0.4)
    point = torch.tensor([[0.2, 0.0, 0.0]])
    torch.testing.assert_close(
        geo(point)["density"], F.softplus(torch.tensor([[10 * (1 - 0.2 / 0.4)]]))
    )
    geo.do_update_step(0, 1000)
    assert geo.density_blob_std == pytest.approx(0.3)


@pytest.mark.parametrize(
    "normal_type,tol",
    [("analytic", 1e-5), ("finite_difference_laplacian", 1e-4), ("finite_difference", 5e-3)],
)
def test_normals_match_analytic_gradient(normal_type, tol):
    geo = make_volume(
        density_bias=0.0,
        density_activation="softplus",
        normal_type=normal_type,
        finite_difference_normal_eps=1e-3,
    )
    geo.density_network = QuadraticField()
    torch.manual_seed(0)
    points = (torch.rand(64, 3) * 1.2 - 0.6).clamp(-0.6, 0.6)
    points = points[points.norm(dim=-1) > 0.2]
    with torch.no_grad():  # normals must work under no_grad too (evaluation)
        out = geo(points, output_normal=True)
    expected = quadratic_normal(points)
    assert (out["normal"] - expected).abs().max() < tol
    torch.testing.assert_close(out["shading_normal"], out["normal"])


def test_analytic_normal_is_differentiable_in_training():
    geo = make_volume(density_bias="blob_magic3d", normal_type="analytic")
    points = torch.rand(16, 3) * 0.8 - 0.4
    out = geo(points, output_normal=True)
    out["normal"].sum().backward()
    grads = [p.grad for p in geo.density_network.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_pred_normal_is_unit_and_trainable():
    geo = make_volume(normal_type="pred")
    out = geo(torch.rand(8, 3) - 0.5, output_normal=True)
    torch.testing.assert_close(out["normal"].norm(dim=-1), torch.ones(8))
    assert sum(p.numel() for p in geo.normal_network.parameters()) > 0


def test_level_is_negative_inside_and_export():
    geo = make_volume(density_bias="blob_magic3d", isosurface_threshold=5.0)
    zero_(geo.density_network)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.9]])
    field, deformation = geo.forward_field(points)
    assert deformation is None
    level = geo.forward_level(field, 5.0)
    assert level[0, 0] < 0 < level[1, 0]
    features = geo.export(points)["features"]
    torch.testing.assert_close(features, geo(points)["features"])


def test_config_errors():
    with pytest.raises(ConfigError, match="density_bia"):
        make_volume(density_bais=1.0)
    with pytest.raises(ConfigError, match="normal_type"):
        make_volume(normal_type="sobel")
    with pytest.raises(ConfigError, match="density_bias"):
        make_volume(density_bias="blob_unknown")


def test_create_from_copies_networks():
    src = make_volume()
    dst = threestudio.find("implicit-volume").create_from(
        src, {"pos_encoding_config": IDENTITY_ENC, "mlp_network_config": TINY_MLP}
    )
    points = torch.rand(10, 3) - 0.5
    torch.testing.assert_close(dst(points)["density"], src(points)["density"])
    torch.testing.assert_close(dst(points)["features"], src(points)["features"])


def test_hash_grid_volume_trains_towards_a_target_density():
    geo = make_volume(
        pos_encoding_config={
            "otype": "HashGrid",
            "n_levels": 4,
            "n_features_per_level": 2,
            "log2_hashmap_size": 12,
            "base_resolution": 4,
            "per_level_scale": 2.0,
        },
        density_bias=0.0,
    )
    optim = torch.optim.Adam(geo.parameters(), lr=1e-2)
    torch.manual_seed(0)

    def target(p):
        return F.softplus(5 * (0.5 - p.norm(dim=-1, keepdim=True)))

    losses = []
    for _ in range(150):
        p = torch.rand(512, 3) * 2 - 1
        loss = F.mse_loss(geo.forward_density(p), target(p))
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert math.isfinite(losses[-1])


def test_integer_values_are_accepted_where_numbers_are_expected():
    # YAML users write `isosurface_threshold: 10` as often as `10.`
    geo = make_volume(isosurface_threshold=10, density_bias=0, density_activation="none")
    zero_(geo.density_network)
    assert geo.cfg.isosurface_threshold == 10
    torch.testing.assert_close(geo.forward_density(torch.zeros(1, 3)), torch.zeros(1, 1))


@pytest.mark.parametrize("normal_type", ["finite_difference", "finite_difference_laplacian"])
def test_finite_difference_normals_difference_the_activated_density(normal_type):
    # as the established ImplicitVolume: the activated density (forward_density) is
    # differenced, not the raw one; a large step and exp make the two differ visibly
    eps = 0.1
    geo = make_volume(
        density_bias=0.0,
        density_activation="exp",
        normal_type=normal_type,
        finite_difference_normal_eps=eps,
    )
    geo.density_network = QuadraticField()
    points = torch.tensor([[0.3, -0.2, 0.1], [-0.1, 0.25, -0.3], [0.2, 0.2, 0.2]])

    def raw(p):  # the field QuadraticField gives, by hand
        return -(p[..., 0] ** 2 + 2 * p[..., 1] ** 2 + 3 * p[..., 2] ** 2)

    steps = torch.eye(3) * eps

    def hand_normal(field):
        if normal_type == "finite_difference":
            grad = (field(points[:, None] + steps) - field(points)[:, None]) / eps
        else:
            grad = (field(points[:, None] + steps) - field(points[:, None] - steps)) / (2 * eps)
        return F.normalize(-grad, dim=-1)

    with torch.no_grad():
        normal = geo(points, output_normal=True)["normal"]
    expected = hand_normal(lambda p: torch.exp(raw(p)))
    torch.testing.assert_close(normal, expected, atol=1e-5, rtol=0)
    # the raw density's difference points elsewhere: the test tells the two apart
    assert (hand_normal(raw) - expected).abs().max() > 1e-3
