"""Isosurface extraction through ``BaseImplicitGeometry.isosurface`` on fields with known
surfaces: vertices of the extracted mesh must lie on the analytic sphere."""

import pytest
import torch

import threestudio


def sphere_volume(**overrides):
    cfg = {
        "pos_encoding_config": {"otype": "Identity"},
        "mlp_network_config": {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1},
        "density_bias": "blob_magic3d",
        "density_activation": "none",
        "density_blob_scale": 10.0,
        "density_blob_std": 0.5,
        "isosurface_threshold": 5.0,  # 10 (1 - r / 0.5) = 5 at r = 0.25
        "isosurface_resolution": 32,
    }
    cfg.update(overrides)
    geo = threestudio.find("implicit-volume")(cfg)
    with torch.no_grad():
        for p in geo.density_network.parameters():
            p.zero_()
    return geo


@pytest.mark.parametrize("method", ["mc", "mt"])
def test_volume_isosurface_is_the_threshold_sphere(method):
    geo = sphere_volume(isosurface_method=method)
    mesh = geo.isosurface()
    r = mesh.v_pos.norm(dim=-1)
    assert mesh.t_pos_idx.shape[0] > 100
    # the coarse-to-fine second pass uses a tight box, so the error is a fraction of a cell
    assert (r - 0.25).abs().max() < 0.02


def test_sdf_isosurface_and_auto_threshold():
    geo = threestudio.find("implicit-sdf")(
        {
            "pos_encoding_config": {"otype": "Identity"},
            "mlp_network_config": {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1},
            "sdf_bias": "sphere",
            "sdf_bias_params": 0.6,
            "isosurface_method": "mc",
            "isosurface_resolution": 32,
        }
    )
    with torch.no_grad():
        for p in geo.sdf_network.parameters():
            p.zero_()
    mesh = geo.isosurface()
    assert (mesh.v_pos.norm(dim=-1) - 0.6).abs().max() < 0.02
    # the outward face orientation of an SDF mesh: normals agree with the position
    v = mesh.v_pos[mesh.t_pos_idx]
    face_n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert ((face_n * v.mean(1)).sum(-1) > 0).float().mean() > 0.99
