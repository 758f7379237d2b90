import math

import numpy as np
import pytest
import torch

from threestudio.models.isosurface import MarchingCubeCPUHelper, MarchingTetrahedraHelper
from threestudio.utils.tets import generate_tet_grid, load_tet_grid

CENTRE = torch.tensor([0.5, 0.45, 0.55])
RADIUS = 0.3


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THREESTUDIO_CACHE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no load/tets here


def sphere_level(points):
    return (points - CENTRE).norm(dim=-1, keepdim=True) - RADIUS


def edge_counts(faces):
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0, return_counts=True)[1]


def signed_volume(v, f):
    f = f.long()
    return (v[f[:, 0]] * torch.linalg.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6


def test_tet_grid_is_conforming_and_fills_the_cube():
    verts, tets = generate_tet_grid(3)
    assert verts.shape == (64, 3) and tets.shape == (6 * 27, 4)
    assert verts.min() == 0.0 and verts.max() == 1.0
    p = verts[tets]
    vol = np.einsum("ij,ij->i", p[:, 1] - p[:, 0], np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]))
    assert np.all(vol > 0)  # positively oriented
    assert vol.sum() / 6 == pytest.approx(1.0)
    # every triangle is shared by two tets inside the cube, one on the boundary
    faces = np.concatenate(
        [tets[:, [0, 1, 2]], tets[:, [0, 1, 3]], tets[:, [0, 2, 3]], tets[:, [1, 2, 3]]]
    )
    _, counts = np.unique(np.sort(faces, axis=1), axis=0, return_counts=True)
    assert counts.max() == 2
    assert (counts == 1).sum() == 6 * 3 * 3 * 2  # boundary triangles: 2 per boundary square


def test_tet_grid_is_cached(tmp_path):
    load_tet_grid(4)
    assert (tmp_path / "tets" / "4_tets.npz").exists()
    v, t = load_tet_grid(4)
    assert v.shape == (125, 3) and t.shape == (384, 4)


@pytest.mark.parametrize("helper_cls", [MarchingTetrahedraHelper, MarchingCubeCPUHelper])
def test_sphere_is_closed_outward_with_right_volume(helper_cls):
    helper = helper_cls(32)
    mesh = helper(sphere_level(helper.grid_vertices))
    counts = edge_counts(mesh.t_pos_idx)
    assert torch.all(counts == 2)  # watertight
    vol = signed_volume(mesh.v_pos, mesh.t_pos_idx).item()
    assert vol == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.03)  # positive: outward
    assert torch.allclose(mesh.v_pos.mean(0), CENTRE, atol=0.01)
    radial = (mesh.v_pos - CENTRE).norm(dim=-1)
    assert torch.allclose(radial, torch.full_like(radial, RADIUS), atol=0.01)
    outward = ((mesh.v_nrm * (mesh.v_pos - CENTRE)).sum(-1) > 0).float().mean()
    assert outward == 1.0


def test_marching_tets_gradient_matches_finite_differences():
    helper = MarchingTetrahedraHelper(6)
    level = sphere_level(helper.grid_vertices).double().detach()
    weights = torch.randn(1000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def objective(lvl):
        mesh = helper(lvl)
        return (mesh.v_pos * weights[: mesh.v_pos.shape[0]]).sum()

    lvl = level.clone().requires_grad_(True)
    objective(lvl).backward()
    assert lvl.grad.abs().sum() > 0
    idx = torch.nonzero(lvl.grad.abs().squeeze(1) > 1e-3).squeeze(1)[:8]
    eps = 1e-6
    for i in idx.tolist():
        d = torch.zeros_like(level)
        d[i] = eps
        fd = (objective(level + d) - objective(level - d)) / (2 * eps)
        assert lvl.grad[i, 0].item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-6)


def test_marching_tets_deformation_is_differentiable_and_bounded():
    helper = MarchingTetrahedraHelper(6)
    level = sphere_level(helper.grid_vertices)
    deformation = torch.zeros_like(helper.grid_vertices).requires_grad_(True)
    mesh = helper(level, deformation=deformation)
    mesh.v_pos.sum().backward()
    assert deformation.grad.abs().sum() > 0
    big = helper.normalize_grid_deformation(torch.full((1, 3), 100.0))
    assert torch.allclose(big, torch.full((1, 3), 1 / 6))


def test_marching_cubes_returns_on_input_device_without_grad():
    helper = MarchingCubeCPUHelper(16)
    level = sphere_level(helper.grid_vertices)
    mesh = helper(level)
    assert mesh.v_pos.device == level.device and not mesh.v_pos.requires_grad
    assert mesh.v_pos.min() >= 0 and mesh.v_pos.max() <= 1
