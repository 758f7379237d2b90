import pytest
import torch
import trimesh

from threestudio.models.mesh import Mesh
from threestudio.utils.errors import ConfigError


def icosphere(subdivisions=2, radius=1.0, offset=(0.0, 0.0, 0.0)):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    v = torch.tensor(m.vertices, dtype=torch.float32) + torch.tensor(offset)
    return v, torch.tensor(m.faces, dtype=torch.long)


def test_extras_and_requires_grad():
    v, f = icosphere(1)
    mesh = Mesh(v, f, bbox=torch.zeros(2, 3))
    assert "bbox" in mesh.extras and not mesh.requires_grad
    mesh.add_extra("tag", 3)
    assert mesh.extras["tag"] == 3
    assert Mesh(v.requires_grad_(True), f).requires_grad


def test_sphere_normals_point_outward_and_are_cached():
    v, f = icosphere(2)
    mesh = Mesh(v, f)
    n = mesh.v_nrm
    assert torch.allclose(n.norm(dim=-1), torch.ones(len(v)), atol=1e-5)
    # on a sphere the area-weighted normal is close to the radial direction
    assert (n * v).sum(-1).min() > 0.99
    assert mesh.v_nrm is n


def test_edges_of_a_tetrahedron():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    mesh = Mesh(v, f)
    assert mesh.edges.shape == (6, 2)
    assert torch.all(mesh.edges[:, 0] < mesh.edges[:, 1])


def test_edges_are_the_sorted_unique_rows():
    # the integer-key unique must give torch.unique(dim=0)'s rows in its order
    v, f = icosphere(3)
    f = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(0))]
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    assert torch.equal(Mesh(v, f).edges, torch.unique(edges, dim=0))


def test_remove_outlier_drops_small_component():
    big_v, big_f = icosphere(2)  # 320 faces
    small_v, small_f = icosphere(0, radius=0.1, offset=(3.0, 0.0, 0.0))  # 20 faces
    v = torch.cat([big_v, small_v])
    f = torch.cat([big_f, small_f + len(big_v)])
    mesh = Mesh(v, f)
    kept = mesh.remove_outlier(0.1)  # fraction: components below 34 faces go
    assert kept.t_pos_idx.shape[0] == 320 and kept.v_pos.shape[0] == len(big_v)
    assert kept.v_pos.norm(dim=-1).max() < 1.01
    assert mesh.remove_outlier(21).t_pos_idx.shape[0] == 320  # int: a face count
    assert mesh.remove_outlier(20).t_pos_idx.shape[0] == 340
    # gradients still reach the original positions
    vg = v.clone().requires_grad_(True)
    Mesh(vg, f).remove_outlier(0.1).v_pos.sum().backward()
    assert vg.grad[: len(big_v)].abs().sum() > 0 and vg.grad[len(big_v) :].abs().sum() == 0


def test_unwrap_uv_and_tangents():
    v, f = icosphere(1)
    mesh = Mesh(v, f)
    mesh.unwrap_uv(xatlas_chart_options={"max_iterations": 2}, xatlas_pack_options={"padding": 1})
    uv = mesh.v_tex
    assert uv.min() >= 0 and uv.max() <= 1
    assert mesh.t_tex_idx.shape == f.shape and int(mesh.t_tex_idx.max()) < uv.shape[0]
    t = mesh.v_tng
    assert torch.allclose(t.norm(dim=-1), torch.ones(len(v)), atol=1e-4)
    assert (t * mesh.v_nrm).sum(-1).abs().max() < 1e-4
    with pytest.raises(ConfigError, match="max_iteration"):
        mesh.unwrap_uv(xatlas_chart_options={"max_iteration": 1})


def test_vertex_colour():
    v, f = icosphere(1)
    mesh = Mesh(v, f)
    assert mesh.v_rgb is None
    mesh.set_vertex_color(torch.rand(len(v), 3))
    assert mesh.v_rgb.shape == (len(v), 3)


def test_normal_consistency_zero_on_plane_and_positive_when_bent():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    assert Mesh(v, f).normal_consistency().item() == pytest.approx(0.0, abs=1e-7)
    bent = v.clone()
    bent[3, 2] = 1.0  # lifts one corner: the two faces are no longer coplanar
    bent.requires_grad_(True)
    loss = Mesh(bent, f).normal_consistency()
    # area-weighted vertex normals: n0 = n2 = (1, -1, 2)/sqrt(6), n1 = (0, 0, 1),
    # n3 = (1, -1, 1)/sqrt(3); edges 01, 12 give 1 - 2/sqrt(6), edges 23, 03 give
    # 1 - 4/sqrt(18), edge 02 gives 0: the mean over the 5 edges
    expected = (2 * (1 - 2 / 6**0.5) + 2 * (1 - 4 / 18**0.5)) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert bent.grad.abs().sum() > 0


def test_laplacian_smoothing_reduces_noise():
    v, f = icosphere(2)
    noisy = v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
    clean = Mesh(v, f).laplacian().item()  # a sphere's own (curvature) term
    assert Mesh(noisy, f).laplacian() > 1.5 * clean
    x = noisy.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=0.1)
    for _ in range(30):
        loss = Mesh(x, f).laplacian()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the noise is smoothed away: the loss falls below the clean sphere's
    assert loss.item() < clean
