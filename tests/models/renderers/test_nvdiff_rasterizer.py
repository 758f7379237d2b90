"""nvdiff-rasterizer on a sphere: coverage, normals and shading against analytic values."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import get_mvp_matrix, get_projection_matrix

TINY_ENCODING = {
    "otype": "HashGrid",
    "n_levels": 2,
    "n_features_per_level": 2,
    "log2_hashmap_size": 10,
    "base_resolution": 4,
    "per_level_scale": 2.0,
}
TINY_MLP = {"otype": "VanillaMLP", "activation": "ReLU", "n_neurons": 8, "n_hidden_layers": 1}
FOVY = math.radians(40.0)


def look_at_camera(position):
    """(c2w, mvp) of a camera at ``position`` looking at the origin, world +z up."""
    position = torch.as_tensor(position, dtype=torch.float32)
    forward = F.normalize(-position, dim=0)
    right = F.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    proj = get_projection_matrix(FOVY, 1.0, 0.1, 100.0)
    return c2w, get_mvp_matrix(c2w, proj)


def sphere_grid(radius, resolution=32, **kwargs):
    geometry = threestudio.find("tetrahedra-sdf-grid")(
        {
            "isosurface_resolution": resolution,
            "isosurface_deformable_grid": False,
            "shape_init": "sphere",
            "shape_init_params": radius,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
            **kwargs,
        }
    )
    geometry.initialize_shape()
    return geometry


def make_renderer(geometry, bg_color=(0.0, 0.0, 1.0)):
    material = threestudio.find("diffuse-with-point-light-material")({"ambient_only_steps": 0})
    material.update_step(0, 10)
    material.eval()
    background = threestudio.find("solid-color-background")({"color": bg_color})
    renderer = threestudio.find("nvdiff-rasterizer")(
        {"context_type": "cuda"}, geometry=geometry, material=material, background=background
    )
    return renderer


def test_sphere_coverage_normals_and_shading():
    r, d, size = 0.5, 3.0, 96
    geometry = sphere_grid(r)
    # zero texture network: features 0 -> albedo sigmoid(0) = 0.5 everywhere
    for p in geometry.feature_network.parameters():
        torch.nn.init.zeros_(p)
    renderer = make_renderer(geometry)
    position = torch.tensor([d, 0.0, 0.0])
    _, mvp = look_at_camera(position)
    light = torch.tensor([[2.0, 2.0, 1.0]])
    with torch.no_grad():
        out = renderer(mvp[None], position[None], light, size, size)
    for key in ("opacity", "comp_normal", "mesh", "comp_rgb", "comp_rgb_fg", "comp_rgb_bg"):
        assert key in out
    assert out["opacity"].shape == (1, size, size, 1)
    assert out["comp_rgb"].shape == (1, size, size, 3)

    # coverage: a sphere seen from distance d subtends asin(r/d); its silhouette is a disc of
    # NDC radius tan(asin(r/d)) / tan(fovy/2), i.e. pi R^2 / 4 of the image
    ndc_radius = math.tan(math.asin(r / d)) / math.tan(FOVY / 2)
    expected = math.pi * ndc_radius**2 / 4 * size * size
    coverage = out["opacity"].sum().item()
    # measured 0.9993 of the analytic area (the marching-tets sphere is slightly inscribed)
    assert abs(coverage / expected - 1) < 0.03, (coverage, expected)

    # normals: at the centre pixel the surface faces the camera
    c = size // 2
    n_centre = out["comp_normal"][0, c, c] * 2 - 1
    assert torch.dot(F.normalize(n_centre, dim=0), F.normalize(position, dim=0)) > 0.99

    # shading: albedo 0.5 * (ambient 0.1 + diffuse 0.9 * max(n.l, 0)) with the analytic normal
    # of the ray-sphere hit; compared on pixels well inside the silhouette
    from threestudio.models.renderers.nvdiff_rasterizer import pixel_ray_directions

    dirs = pixel_ray_directions(mvp[None], position[None], size, size)[0]
    b = (dirs * position).sum(-1)
    disc = b**2 - (position.dot(position) - r**2)
    inner = (disc > 0.05) & (out["opacity"][0, ..., 0] > 0.999)
    t = -b - disc.clamp(min=0).sqrt()
    hit = position + t[..., None] * dirs
    normal = hit / r
    light_dir = F.normalize(light[0] - hit, dim=-1)
    lambert = (normal * light_dir).sum(-1).clamp(min=0)
    expected_rgb = 0.5 * (0.1 + 0.9 * lambert)
    rgb = out["comp_rgb"][0]
    err = (rgb[inner] - expected_rgb[inner][:, None]).abs()
    assert inner.sum() > 500
    # faceting of the resolution-32 sphere: measured mean 0.0048, max 0.029
    assert err.mean() < 0.01 and err.max() < 0.06, (err.mean(), err.max())
    # background where nothing is covered
    empty = out["opacity"][0, ..., 0] == 0
    assert torch.allclose(rgb[empty], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(out["comp_rgb_fg"][0][empty], torch.zeros(3))


def test_background_gets_pixel_ray_directions_and_context_is_built_once():
    geometry = sphere_grid(0.4, resolution=16)
    renderer = make_renderer(geometry)
    position = torch.tensor([0.0, 3.0, 1.0])
    c2w, mvp = look_at_camera(position)
    from threestudio.models.renderers.nvdiff_rasterizer import pixel_ray_directions

    dirs = pixel_ray_directions(mvp[None], position[None], 8, 8)[0]
    # the centre of the image looks along the camera's -z; row 0 is the top of the view
    centre = F.normalize(dirs[3:5, 3:5].mean((0, 1)), dim=0)
    assert torch.dot(centre, -c2w[:3, 2]) > 0.999
    assert torch.dot(dirs[0].mean(0) - dirs[-1].mean(0), c2w[:3, 1]) > 0
    with torch.no_grad():
        renderer(mvp[None], position[None], position[None], 8, 8)
        ctx = renderer.ctx
        renderer(mvp[None], position[None], position[None], 8, 8, render_rgb=False)
    assert renderer.ctx is ctx


def test_height_and_width_may_be_collated_tensors():
    # an image datamodule's default collate makes batch["height"]/["width"] tensors
    geometry = sphere_grid(0.4, resolution=16)
    renderer = make_renderer(geometry)
    position = torch.tensor([0.0, 3.0, 1.0])
    _, mvp = look_at_camera(position)
    with torch.no_grad():
        ref = renderer(mvp[None], position[None], position[None], 12, 8)
        for h, w in [(torch.tensor([12]), torch.tensor([8])), (torch.tensor(12), np.int64(8))]:
            out = renderer(mvp[None], position[None], position[None], h, w)
            assert out["comp_rgb"].shape == (1, 12, 8, 3)
            torch.testing.assert_close(out["comp_rgb"], ref["comp_rgb"])
            torch.testing.assert_close(out["opacity"], ref["opacity"])
        geometry.sdf.data.fill_(1.0)  # the empty-mesh path too
        out = renderer(mvp[None], position[None], position[None], torch.tensor([12]), 8)
        assert out["comp_rgb"].shape == (1, 12, 8, 3)


def test_empty_mesh_renders_background():
    geometry = threestudio.find("tetrahedra-sdf-grid")(
        {"isosurface_resolution": 8, "geometry_only": True}
    )
    geometry.sdf.data.fill_(1.0)  # everything outside: no surface
    material = threestudio.find("no-material")({"n_output_dims": 3, "input_feature_dims": 3})
    background = threestudio.find("solid-color-background")({"color": (0.2, 0.3, 0.4)})
    renderer = threestudio.find("nvdiff-rasterizer")(
        {}, geometry=geometry, material=material, background=background
    )
    position = torch.tensor([3.0, 0.0, 0.0])
    _, mvp = look_at_camera(position)
    out = renderer(mvp[None], position[None], position[None], 16, 16)
    assert out["opacity"].abs().sum() == 0
    assert torch.allclose(out["comp_rgb"], torch.tensor([0.2, 0.3, 0.4]).expand(1, 16, 16, 3))


def test_unknown_context_type_is_a_config_error():
    geometry = sphere_grid(0.4, resolution=4)
    with pytest.raises(ConfigError, match="context_type"):
        threestudio.find("nvdiff-rasterizer")(
            {"context_type": "vulkan"}, geometry=geometry, material=None, background=None
        )


def test_gradients_reach_texture_field_and_surface():
    geometry = sphere_grid(0.5, resolution=16)
    renderer = make_renderer(geometry)
    position = torch.tensor([3.0, 0.5, 0.5])
    _, mvp = look_at_camera(position)
    out = renderer(mvp[None], position[None], position[None], 32, 32)
    (out["comp_rgb"].mean() + out["opacity"].mean()).backward()
    assert all(p.grad.abs().sum() > 0 for p in geometry.feature_network.parameters())
    # only grid vertices at the zero crossing move the surface: a sparse, nonzero SDF gradient
    assert 0 < (geometry.sdf.grad != 0).sum() < geometry.sdf.numel() // 10
