import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.models.geometry.implicit_sdf import load_mesh_for_init, mesh_sdf
from threestudio.utils.errors import ConfigError

# a small smooth encoding that fits simple shapes in a few hundred steps
FREQ_ENC = {"otype": "ProgressiveBandFrequency", "n_frequencies": 2, "include_xyz": True}
TINY_MLP = {"otype": "VanillaMLP", "n_neurons": 32, "n_hidden_layers": 2}


def make_sdf(**overrides):
    cfg = {
        "radius": 1.0,
        "pos_encoding_config": FREQ_ENC,
        "mlp_network_config": TINY_MLP,
        "shape_init_steps": 300,
        "shape_init_batch_size": 2048,
        "shape_init_lr": 1e-2,
    }
    cfg.update(overrides)
    torch.manual_seed(0)
    geo = threestudio.find("implicit-sdf")(cfg)
    geo.initialize_shape()  # the system does this when training starts
    return geo


def box_sdf(points, half):
    q = points.abs() - half
    return (q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0))[:, None]


class EllipsoidalField(nn.Module):
    """Identity encoding (x + 1) / 2 in, x^2 + 2 y^2 + 3 z^2 - 0.25 out (world units)."""

    def forward(self, enc):
        p = enc * 2 - 1
        return p[:, :1] ** 2 + 2 * p[:, 1:2] ** 2 + 3 * p[:, 2:3] ** 2 - 0.25


@pytest.mark.parametrize(
    "normal_type,tol",
    [("analytic", 1e-5), ("finite_difference_laplacian", 1e-4), ("finite_difference", 5e-3)],
)
def test_sdf_normals_and_gradient(normal_type, tol):
    geo = make_sdf(
        pos_encoding_config={"otype": "Identity"},
        normal_type=normal_type,
        finite_difference_normal_eps=1e-3,
    )
    geo.sdf_network = EllipsoidalField()
    points = torch.rand(64, 3) * 1.2 - 0.6
    points = points[points.norm(dim=-1) > 0.2]
    with torch.no_grad():
        out = geo(points, output_normal=True)
    grad = 2 * points * torch.tensor([1.0, 2.0, 3.0])
    assert (out["normal"] - F.normalize(grad, dim=-1)).abs().max() < tol
    # the unnormalised gradient (eikonal loss input), exact up to the difference scheme
    assert (out["sdf_grad"] - grad).abs().max() < 10 * tol * grad.abs().max()


def test_sphere_init_gives_true_sdf():
    geo = make_sdf(shape_init="sphere", shape_init_params=0.5)
    points = torch.rand(4000, 3) * 2 - 1
    points = points[points.norm(dim=-1) < 0.9]
    with torch.no_grad():
        sdf = geo(points)["sdf"]
    expected = points.norm(dim=-1, keepdim=True) - 0.5
    err = (sdf - expected).abs()
    # measured after 300 steps: mean 0.014, max 0.11 (at the cusp in the centre)
    assert err.mean() < 0.03
    clear = expected.abs() > 0.1
    assert ((sdf > 0) == (expected > 0))[clear].all()


def test_ellipsoid_init_gives_pseudo_sdf():
    axes = torch.tensor([0.6, 0.4, 0.3])
    geo = make_sdf(shape_init="ellipsoid", shape_init_params=axes.tolist(), shape_init_steps=600)
    points = torch.rand(4000, 3) * 2 - 1
    points = points[points.norm(dim=-1) < 0.9]
    with torch.no_grad():
        sdf = geo.forward_sdf(points)
    expected = (points / axes).norm(dim=-1, keepdim=True) - 1
    err = (sdf - expected).abs()
    # measured after 600 steps: mean 0.026, no wrong sign where |sdf| > 0.2
    assert err.mean() < 0.05
    # signs are right wherever the shape is clearly inside or outside
    clear = expected.abs() > 0.2
    assert ((sdf > 0) == (expected > 0))[clear].all()


def test_mesh_sdf_of_a_box_is_exact():
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    v = torch.as_tensor(box.vertices, dtype=torch.float32)
    f = torch.as_tensor(box.faces, dtype=torch.long)
    points = torch.rand(500, 3) * 2 - 1
    expected = box_sdf(points, torch.tensor([0.5, 0.3, 0.2]))
    torch.testing.assert_close(mesh_sdf(points, v, f), expected, atol=1e-5, rtol=0)
    # face orientation does not matter for the sign
    torch.testing.assert_close(mesh_sdf(points, v, f.flip(-1)), expected, atol=1e-5, rtol=0)


def test_mesh_loading_recentres_scales_and_orients(tmp_path):
    import trimesh

    box = trimesh.creation.box(extents=(0.2, 0.8, 0.4))
    box.apply_translation((3.0, 1.0, -2.0))
    path = tmp_path / "box.obj"
    box.export(path)
    # the mesh is y-up and z-front: its y extent becomes z, its z extent becomes x
    v, f = load_mesh_for_init(str(path), 0.5, up="+y", front="+z")
    extent = v.max(0).values - v.min(0).values
    torch.testing.assert_close(extent, torch.tensor([0.5, 0.25, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(v.mean(0) * 0, torch.zeros(3))
    torch.testing.assert_close(
        (v.max(0).values + v.min(0).values) / 2, torch.zeros(3), atol=1e-6, rtol=0
    )
    with pytest.raises(ConfigError, match="orthogonal"):
        load_mesh_for_init(str(path), 0.5, up="+y", front="-y")


def test_mesh_init_gives_inside_outside_signs(tmp_path):
    import trimesh

    path = tmp_path / "cube.obj"
    trimesh.creation.box(extents=(1.0, 1.0, 1.0)).export(path)
    geo = make_sdf(shape_init=f"mesh:{path}", shape_init_params=0.5)
    inside = torch.rand(500, 3) * 0.6 - 0.3  # |x|_inf < 0.3, box half size 0.5
    outside = torch.rand(2000, 3) * 2 - 1
    outside = outside[outside.abs().max(dim=-1).values > 0.7]
    with torch.no_grad():
        assert (geo.forward_sdf(inside) < 0).all()
        assert (geo.forward_sdf(outside) > 0).all()


def test_sdf_bias_and_level():
    geo = make_sdf(
        pos_encoding_config={"otype": "Identity"}, sdf_bias="sphere", sdf_bias_params=0.5
    )
    with torch.no_grad():
        for p in geo.sdf_network.parameters():
            p.zero_()
    points = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.9, 0.0]])
    sdf, deformation = geo.forward_field(points)
    torch.testing.assert_close(sdf, torch.tensor([[-0.4], [0.4]]))
    assert deformation is None
    torch.testing.assert_close(geo.forward_level(sdf, 0.1), sdf - 0.1)


def test_progressive_finite_difference_eps_follows_hash_grid_level():
    enc = {
        "otype": "ProgressiveBandHashGrid",
        "n_levels": 4,
        "n_features_per_level": 2,
        "log2_hashmap_size": 10,
        "base_resolution": 4,
        "per_level_scale": 2.0,
        "start_level": 1,
        "start_step": 0,
        "update_steps": 100,
    }
    geo = make_sdf(pos_encoding_config=enc, finite_difference_normal_eps="progressive")
    assert geo.finite_difference_normal_eps == pytest.approx(2.0 / 4)
    geo.do_update_step(0, 250)  # level 3: resolution 4 * 2^2
    assert geo.finite_difference_normal_eps == pytest.approx(2.0 / 16)
    geo.do_update_step(0, 10_000)  # capped at the last level
    assert geo.finite_difference_normal_eps == pytest.approx(2.0 / 32)
    with pytest.raises(ConfigError, match="ProgressiveBandHashGrid"):
        make_sdf(finite_difference_normal_eps="progressive")


def test_config_errors():
    with pytest.raises(ConfigError, match="shape_init"):
        make_sdf(shape_init="cube", shape_init_params=0.5)
    with pytest.raises(ConfigError, match="shape_init_params"):
        make_sdf(shape_init="sphere")
    with pytest.raises(ConfigError, match="shape_inti"):
        make_sdf(shape_inti="sphere")


def test_create_from_implicit_volume_fits_its_surface():
    volume = threestudio.find("implicit-volume")(
        {
            "pos_encoding_config": {"otype": "Identity"},
            "mlp_network_config": {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1},
            "density_bias": "blob_magic3d",
            "density_blob_scale": 10.0,
            "density_blob_std": 0.5,
            "isosurface_threshold": 5.0,
        }
    )
    with torch.no_grad():
        for p in volume.density_network.parameters():
            p.zero_()
    # softplus(10 (1 - r / 0.5)) = 5 at r = 0.2497: a sphere of that radius
    radius = 0.5 * (1 - torch.log(torch.expm1(torch.tensor(5.0))).item() / 10)
    torch.manual_seed(0)
    sdf = threestudio.find("implicit-sdf").create_from(
        volume,
        {
            "pos_encoding_config": FREQ_ENC,
            "mlp_network_config": TINY_MLP,
            "shape_init_steps": 300,
            "shape_init_batch_size": 2048,
            "shape_init_lr": 1e-2,
        },
        resolution=48,
    )
    points = torch.rand(2000, 3) * 2 - 1
    with torch.no_grad():
        pred = sdf.forward_sdf(points)
    err = (pred - (points.norm(dim=-1, keepdim=True) - radius)).abs()
    assert err.mean() < 0.03
