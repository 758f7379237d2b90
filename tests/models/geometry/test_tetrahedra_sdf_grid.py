"""tetrahedra-sdf-grid: analytic initialisation, silhouette fitting through nvdiff-rasterizer,
conversion from an implicit volume, fixed geometry."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import threestudio
from threestudio.kernels.rasterizer import NVDiffRasterizerContext
from threestudio.utils.errors import ConfigError, UserError
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


def make_grid(**cfg):
    return threestudio.find("tetrahedra-sdf-grid")(
        {"pos_encoding_config": TINY_ENCODING, "mlp_network_config": TINY_MLP, **cfg}
    )


def mesh_volume(v_pos, faces):
    v0, v1, v2 = (v_pos[faces[:, k]] for k in range(3))
    return (v0 * torch.linalg.cross(v1, v2)).sum().item() / 6.0


def edge_face_counts(faces):
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    e = torch.sort(e, dim=1).values
    _, counts = torch.unique(e, dim=0, return_counts=True)
    return counts


def look_at_mvp(position, fovy=math.radians(40.0)):
    forward = F.normalize(-position, dim=0)
    right = F.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return get_mvp_matrix(c2w, get_projection_matrix(fovy, 1.0, 0.1, 100.0))


def test_sphere_init_gives_closed_mesh_of_the_right_volume():
    r = 0.5
    geo = make_grid(isosurface_resolution=32, shape_init="sphere", shape_init_params=r)
    geo.initialize_shape()
    mesh = geo.isosurface()
    # every edge in exactly two faces: closed and manifold
    assert (edge_face_counts(mesh.t_pos_idx) == 2).all()
    radii = mesh.v_pos.norm(dim=-1)
    # vertices on the zero crossings of an exact SDF: measured max error 0.0027
    assert (radii - r).abs().max() < 0.01
    volume = mesh_volume(mesh.v_pos.detach(), mesh.t_pos_idx)
    # measured 0.5195 against 4/3 pi r^3 = 0.5236 (-0.8%: the mesh is inscribed)
    assert abs(volume / (4 / 3 * math.pi * r**3) - 1) < 0.03
    # outward normals (positive volume) and gradients reach the SDF and the deformation
    assert volume > 0
    mesh.v_pos.sum().backward()
    assert geo.sdf.grad.abs().sum() > 0 and geo.deformation.grad.abs().sum() > 0


def test_ellipsoid_init_and_world_scale():
    geo = make_grid(
        isosurface_resolution=24,
        radius=2.0,
        isosurface_deformable_grid=False,
        shape_init="ellipsoid",
        shape_init_params=[1.5, 0.6, 0.9],
    )
    geo.initialize_shape()
    v = geo.isosurface().v_pos.detach()
    extent = v.amax(0) - v.amin(0)
    # the grid spans the world box [-2, 2]^3, so the mesh has the ellipsoid's world size
    assert torch.allclose(extent, torch.tensor([3.0, 1.2, 1.8]), atol=0.1), extent
    assert geo.deformation is None


def test_fits_target_silhouettes_of_a_box():
    import trimesh

    box = trimesh.creation.box(extents=(0.9, 0.5, 0.7))
    box_v = torch.tensor(box.vertices, dtype=torch.float32)
    box_f = torch.tensor(box.faces)
    positions, mvps = [], []
    for i in range(8):
        az, el = 2 * math.pi * i / 8, math.radians(25 if i % 2 else -15)
        p = 3.0 * torch.tensor(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )
        positions.append(p)
        mvps.append(look_at_mvp(p))
    pos, mvp = torch.stack(positions), torch.stack(mvps)
    size = 64
    ctx = NVDiffRasterizerContext("cuda", "cpu")
    with torch.no_grad():
        rast, _ = ctx.rasterize(ctx.vertex_transform(box_v, mvp), box_f, (size, size))
    target = (rast[..., 3:] > 0).float()

    geo = make_grid(
        isosurface_resolution=16, geometry_only=True, shape_init="sphere", shape_init_params=0.5
    )
    geo.initialize_shape()
    assert geo(torch.zeros(4, 3)) == {}
    renderer = threestudio.find("nvdiff-rasterizer")(
        {}, geometry=geo, material=None, background=None
    )

    def iou():
        with torch.no_grad():
            mask = renderer(mvp, pos, pos, size, size, render_rgb=False)["opacity"] > 0.5
        return ((mask & (target > 0.5)).sum() / (mask | (target > 0.5)).sum()).item()

    iou_start = iou()
    optim = torch.optim.Adam(geo.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        out = renderer(mvp, pos, pos, size, size, render_rgb=False)
        loss = F.mse_loss(out["opacity"], target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    # measured: loss 0.038 -> 0.0027, mask IoU 0.77 -> 0.982 (40 Adam steps, about 5 s)
    assert losses[-1] < losses[0] / 5, losses
    assert iou_start < 0.85
    iou_end = iou()
    assert iou_end > 0.95, iou_end


def _sphere_volume(radius_box=1.0):
    """An implicit-volume whose density is a cone in |x| (magic3d blob, zeroed network)."""
    vol = threestudio.find("implicit-volume")(
        {
            "radius": radius_box,
            "isosurface_threshold": 5.0,
            "density_bias": "blob_magic3d",
            "density_blob_scale": 10.0,
            "density_blob_std": 0.5,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
        }
    )
    with torch.no_grad():
        for p in vol.density_network.parameters():
            p.zero_()
    return vol


def test_create_from_implicit_volume_sphere():
    vol = _sphere_volume()
    # softplus(10 (1 - r / 0.5)) = 5  <=>  r = 0.5 (1 - log(e^5 - 1) / 10)
    r_expected = 0.5 * (1 - math.log(math.exp(5.0) - 1) / 10)
    geo = threestudio.find("tetrahedra-sdf-grid").create_from(
        vol,
        {
            "isosurface_resolution": 24,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
        },
        copy_net=True,
    )
    # the grid was fitted to the surface's box (+ a margin), not the whole scene box
    bbox = geo.isosurface_bbox
    assert (bbox[1] < 0.5).all() and (bbox[0] > -0.5).all() and (bbox[1] > r_expected).all()
    mesh = geo.isosurface()
    radii = mesh.v_pos.detach().norm(dim=-1)
    # measured mean radius 0.24999 against 0.25034
    assert abs(radii.mean().item() / r_expected - 1) < 0.02, (radii.mean(), r_expected)
    assert (edge_face_counts(mesh.t_pos_idx) == 2).all()
    # the texture network came along
    pts = torch.rand(16, 3) - 0.5
    assert torch.allclose(geo(pts)["features"], vol(pts)["features"], atol=1e-6)
    # isosurface_bbox is state: a fresh grid loading the weights gets the same mesh
    clone = make_grid(isosurface_resolution=24)
    clone.load_state_dict(geo.state_dict())
    assert torch.allclose(clone.isosurface().v_pos, mesh.v_pos)


def test_create_from_auto_threshold_and_errors():
    vol = _sphere_volume()
    vol.cfg.isosurface_threshold = "auto"
    geo = threestudio.find("tetrahedra-sdf-grid").create_from(
        vol, {"isosurface_resolution": 12, "geometry_only": True}
    )
    assert geo.isosurface().t_pos_idx.shape[0] > 0
    vol.cfg.isosurface_threshold = 1000.0  # above every density: no surface
    with pytest.raises(UserError, match="no surface"):
        threestudio.find("tetrahedra-sdf-grid").create_from(vol, {"isosurface_resolution": 8})
    with pytest.raises(ConfigError, match="cannot create"):
        threestudio.find("tetrahedra-sdf-grid").create_from(torch.nn.Linear(1, 1))


@pytest.mark.parametrize("copy_net", [True, False])
def test_create_from_tetrahedra_sdf_grid_keeps_the_mesh(copy_net):
    # a geometry stage turned into a texture stage (multi-stage pipelines): box, SDF and
    # deformation are copied, so the extracted mesh is the source's
    torch.manual_seed(0)
    src = make_grid(isosurface_resolution=12, shape_init="sphere", shape_init_params=0.5)
    src.initialize_shape()
    with torch.no_grad():
        src.isosurface_bbox.mul_(0.8)
        src.sdf.add_(torch.randn_like(src.sdf) * 0.02)
        src.deformation.normal_(std=0.3)
        for p in src.encoding.parameters():
            p.normal_()
    geo = threestudio.find("tetrahedra-sdf-grid").create_from(
        src,
        {
            "isosurface_resolution": 12,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
        },
        copy_net=copy_net,
    )
    mesh, expected = geo.isosurface(), src.isosurface()
    assert mesh.t_pos_idx.shape[0] > 0
    assert torch.equal(mesh.t_pos_idx, expected.t_pos_idx)
    torch.testing.assert_close(mesh.v_pos, expected.v_pos, rtol=0, atol=0)
    torch.testing.assert_close(geo.isosurface_bbox, src.isosurface_bbox)
    points = torch.rand(16, 3) - 0.5
    same = torch.equal(geo(points)["features"], src(points)["features"])
    assert same == copy_net
    # the copies are the new stage's own parameters
    assert geo.sdf is not src.sdf and geo.sdf.requires_grad
    with pytest.raises(ConfigError, match="isosurface_resolution"):
        threestudio.find("tetrahedra-sdf-grid").create_from(src, {"isosurface_resolution": 8})


def test_fix_geometry_caches_the_mesh_and_has_no_geometry_parameters():
    geo = make_grid(
        isosurface_resolution=8, fix_geometry=True, shape_init="sphere", shape_init_params=0.5
    )
    geo.initialize_shape()
    names = {n for n, _ in geo.named_parameters()}
    assert "sdf" not in names and "deformation" not in names
    assert "sdf" in geo.state_dict()
    assert geo.isosurface() is geo.isosurface()


def test_mesh_shape_init(tmp_path):
    import trimesh

    path = tmp_path / "box.obj"
    trimesh.creation.box(extents=(2.0, 1.0, 1.0)).export(path)
    geo = make_grid(
        isosurface_resolution=16,
        isosurface_deformable_grid=False,
        shape_init=f"mesh:{path}",
        shape_init_params=0.8,
    )
    geo.initialize_shape()
    v = geo.isosurface().v_pos.detach()
    extent = (v.amax(0) - v.amin(0)).numpy()
    # largest half-extent scaled to 0.8: a 1.6 x 0.8 x 0.8 box, up to one grid cell (0.125)
    assert np.allclose(extent, [1.6, 0.8, 0.8], atol=0.13), extent
    with pytest.raises(ConfigError, match="shape_init"):
        make_grid(isosurface_resolution=4, shape_init="cube", shape_init_params=1.0)


def test_create_from_implicit_sdf_copies_level_and_deformation():
    sdf = threestudio.find("implicit-sdf")(
        {
            "sdf_bias": "sphere",
            "sdf_bias_params": 0.4,
            "isosurface_deformable_grid": True,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
        }
    )
    with torch.no_grad():
        for p in sdf.sdf_network.parameters():
            p.zero_()
    geo = threestudio.find("tetrahedra-sdf-grid").create_from(
        sdf,
        {
            "isosurface_resolution": 20,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
        },
    )
    # the stored level is the source's SDF at the (deformed-grid-free) vertices
    expected = geo.grid_points.norm(dim=-1, keepdim=True) - 0.4
    assert torch.allclose(geo.sdf.data, expected, atol=1e-5)
    _, raw_deformation = sdf.forward_field(geo.grid_points)
    assert torch.allclose(geo.deformation.data, raw_deformation, atol=1e-6)
    radii = geo.isosurface().v_pos.detach().norm(dim=-1)
    assert (radii - 0.4).abs().max() < 0.05
