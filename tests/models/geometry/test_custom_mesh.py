"""custom-mesh: loading an OBJ, axes conversion, centring and scaling, texture field."""

import numpy as np
import pytest
import torch

import threestudio
from threestudio.utils.errors import ConfigError, UserError

TINY_ENCODING = {
    "otype": "HashGrid",
    "n_levels": 2,
    "n_features_per_level": 2,
    "log2_hashmap_size": 10,
    "base_resolution": 4,
    "per_level_scale": 2.0,
}
TINY_MLP = {"otype": "VanillaMLP", "activation": "ReLU", "n_neurons": 8, "n_hidden_layers": 1}


@pytest.fixture
def box_obj(tmp_path):
    """A 2 x 1 x 0.5 box centred at (5, 5, 5), written as OBJ."""
    import trimesh

    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    box.apply_translation((5.0, 5.0, 5.0))
    path = tmp_path / "box.obj"
    box.export(path)
    return path


def make_mesh(path, **cfg):
    return threestudio.find("custom-mesh")(
        {
            "shape_init": f"mesh:{path}",
            "shape_init_params": 0.8,
            "pos_encoding_config": TINY_ENCODING,
            "mlp_network_config": TINY_MLP,
            **cfg,
        }
    )


def test_loads_centres_and_scales(box_obj):
    geo = make_mesh(box_obj)
    mesh = geo.isosurface()
    assert mesh.v_pos.shape == (8, 3) and mesh.t_pos_idx.shape == (12, 3)
    v = mesh.v_pos
    # centred on its bounding box; the largest |coordinate| (the 2-long x side) becomes 0.8
    assert torch.allclose(v.amax(0) + v.amin(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(v.amax(0), torch.tensor([0.8, 0.4, 0.2]), atol=1e-6)
    # the same Mesh object each call; outward normals (positive volume)
    assert geo.isosurface() is mesh
    f = mesh.t_pos_idx
    volume = (v[f[:, 0]] * torch.linalg.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert torch.isclose(volume, torch.tensor(1.6 * 0.8 * 0.4), rtol=1e-5)


def test_axes_conversion_on_a_known_vertex(box_obj):
    # the mesh's +y is up and its +x is front: world z = mesh y, world x = mesh x and
    # world y = z_world x x_world = mesh (+y x +x) = mesh -z
    geo = make_mesh(box_obj, shape_init_mesh_up="+y", shape_init_mesh_front="+x")
    v = geo.isosurface().v_pos.numpy()
    # the box corner (+1, +0.5, +0.25) (centred, before scaling) is (0.8, 0.4, 0.2) scaled
    expected = np.array([0.8, -0.2, 0.4])
    assert np.abs(v - expected).sum(-1).min() < 1e-5
    geo = make_mesh(box_obj, shape_init_mesh_up="+z", shape_init_mesh_front="-y")
    v = geo.isosurface().v_pos.numpy()
    # up +z, front -y: world x = mesh -y, world y = +z x -y = mesh +x, world z = mesh z
    assert np.allclose(v.max(0), [0.4, 0.8, 0.2], atol=1e-6)


def test_texture_field_and_state(box_obj):
    geo = make_mesh(box_obj)
    pts = torch.rand(5, 7, 3) - 0.5
    out = geo(pts)
    assert out["features"].shape == (5, 7, 3)
    assert torch.allclose(geo.export(pts)["features"], out["features"])
    out["features"].sum().backward()
    assert all(p.grad is not None for p in geo.feature_network.parameters())
    # vertices and faces are saved with the module; a texture loss does not move them
    state = geo.state_dict()
    assert "v_buffer" in state and "t_buffer" in state
    assert "v_buffer" not in {n for n, _ in geo.named_parameters()}
    # loading weights in place refreshes the mesh (and its cached normals)
    normals = geo.isosurface().v_nrm.clone()
    state["v_buffer"] = state["v_buffer"] * torch.tensor([-1.0, 1.0, 1.0])
    geo.load_state_dict(state)
    assert torch.allclose(geo.isosurface().v_pos, state["v_buffer"])
    assert not torch.allclose(geo.isosurface().v_nrm, normals)


def test_errors(box_obj, tmp_path):
    with pytest.raises(ConfigError, match="shape_init"):
        threestudio.find("custom-mesh")({"shape_init": "sphere"})
    with pytest.raises(UserError, match="not found"):
        make_mesh(tmp_path / "missing.obj")
    with pytest.raises(ConfigError, match="orthogonal"):
        make_mesh(box_obj, shape_init_mesh_up="+x", shape_init_mesh_front="-x")
