import math

import pytest
import torch

from threestudio.kernels.rasterizer import NVDiffRasterizerContext, _nvdiffrast_available


@pytest.fixture
def ctx():
    return NVDiffRasterizerContext("cuda", "cpu")


def _triangle():
    # pixel-space corners (4, 4), (12, 4), (4, 12) on a 16x16 image
    pos = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [-0.5, 0.5, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    return pos, tri


def test_triangle_coverage_and_barycentrics(ctx):
    pos, tri = _triangle()
    rast, rast_db = ctx.rasterize(pos, tri, (16, 16))
    covered = rast[0, ..., 3] > 0
    # centres (i + 0.5, j + 0.5) with i, j >= 4 and i + j <= 15: 8 + 7 + ... + 1
    assert int(covered.sum()) == 36
    assert covered.sum().item() == pytest.approx(0.5 * 8 * 8, abs=8 * 1.5)  # area within an edge
    # centre (4.5, 4.5): weight of vertex 0 is 1 - 1/16 - 1/16, of vertex 1 is 1/16
    assert torch.allclose(rast[0, 4, 4], torch.tensor([0.875, 0.0625, 0.0, 1.0]))
    assert torch.all(rast[0, ~covered] == 0)
    # row index grows with clip-space y: row 11 col 4 is inside (near vertex 2 at y=+0.5)
    assert covered[11, 4] and not covered[4, 11 + 1]
    # affine barycentrics: d(u)/dx = -1/8, d(v)/dx = 1/8, d(v)/dy = 0
    db = rast_db[0, 5, 5]
    assert torch.allclose(db, torch.tensor([-0.125, -0.125, 0.125, 0.0]), atol=1e-5)


def test_resolution_may_be_collated_tensors(ctx):
    # (batch["height"], batch["width"]) from a default collate: one-element tensors
    pos, tri = _triangle()
    ref, _ = ctx.rasterize(pos, tri, (16, 12))
    for resolution in [(torch.tensor([16]), torch.tensor([12])), (torch.tensor(16), 12)]:
        rast, _ = ctx.rasterize(pos, tri, resolution)
        assert torch.equal(rast, ref)
    assert ctx.rasterize(pos, tri, torch.tensor([16]))[0].shape == (1, 16, 16, 4)


def test_interpolate_vertex_colours(ctx):
    pos, tri = _triangle()
    rast, _ = ctx.rasterize(pos, tri, (16, 16))
    colours = torch.eye(3)
    out, _ = ctx.interpolate_one(colours, rast, tri)
    assert torch.allclose(out[0, 4, 4], torch.tensor([0.875, 0.0625, 0.0625]))
    assert torch.allclose(out[0, 4, 11], torch.tensor([0.0, 0.9375, 0.0625]))
    assert torch.all(out[0, 0, 0] == 0)


def test_cube_coverage_and_depth(ctx):
    import trimesh

    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    verts = torch.tensor(cube.vertices, dtype=torch.float32)
    faces = torch.tensor(cube.faces, dtype=torch.int32)
    # orthographic view down -z: clip x, y = 0.8 * (x, y), z/w = -z / 2 (near face z=+0.5)
    mvp = torch.diag(torch.tensor([0.8, 0.8, -0.5, 1.0]))[None]
    pos = ctx.vertex_transform(verts, mvp)
    rast, _ = ctx.rasterize(pos, faces, (40, 40))
    covered = rast[0, ..., 3] > 0
    # the square [-0.4, 0.4]^2 covers 16x16 pixels exactly; edges may add a row/column
    assert 16 * 16 <= int(covered.sum()) <= 18 * 18
    # depth test: only the near face (z = +0.5 -> z/w = -0.25) is visible
    assert torch.allclose(rast[0, covered, 2], torch.full((int(covered.sum()),), -0.25))
    near_faces = torch.nonzero(torch.tensor(cube.vertices[cube.faces][:, :, 2].min(1) > 0.49))
    visible = torch.unique(rast[0, covered, 3].long() - 1)
    assert set(visible.tolist()) <= set(near_faces.squeeze(1).tolist())


def _perspective(fovy=math.radians(60), near=0.1, far=10.0):
    f = 1 / math.tan(fovy / 2)
    return torch.tensor(
        [
            [f, 0, 0, 0],
            [0, f, 0, 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ],
        dtype=torch.float32,
    )


def test_perspective_correct_interpolation(ctx):
    # a slanted triangle in front of a camera at the origin looking down -z
    verts = torch.tensor([[-1.0, -1.0, -2.0], [1.0, -0.5, -4.0], [0.0, 1.0, -3.0]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    proj = _perspective()[None]
    pos = ctx.vertex_transform(verts, proj)
    H = W = 32
    rast, _ = ctx.rasterize(pos, tri, (H, W))
    world, _ = ctx.interpolate_one(verts, rast, tri)
    covered = rast[0, ..., 3] > 0
    rows, cols = torch.nonzero(covered, as_tuple=True)
    p = world[0, rows, cols]
    clip = torch.cat([p, torch.ones_like(p[:, :1])], -1) @ proj[0].T
    ndc = clip[:, :3] / clip[:, 3:]
    # the interpolated 3D point projects back onto its own pixel centre, with the stored depth
    assert torch.allclose(ndc[:, 0], (cols + 0.5) / W * 2 - 1, atol=1e-4)
    assert torch.allclose(ndc[:, 1], (rows + 0.5) / H * 2 - 1, atol=1e-4)
    assert torch.allclose(ndc[:, 2], rast[0, rows, cols, 2], atol=1e-4)


def test_interpolate_gradient_matches_finite_differences(ctx):
    verts = torch.tensor(
        [[-1.0, -1.0, -2.0], [1.0, -0.5, -4.0], [0.0, 1.0, -3.0]], dtype=torch.float64
    )
    attr = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    proj = _perspective().double()[None]

    def value(v):
        pos = ctx.vertex_transform(v, proj)
        rast, _ = ctx.rasterize(pos.float(), tri, (16, 16))
        # recompute with double precision positions through the same pixels
        from threestudio.kernels.rasterizer import torch_rasterize

        rast, _ = torch_rasterize(pos, tri, (16, 16))
        out, _ = ctx.interpolate_one(attr, rast, tri)
        return out[0, 7:9, 7:9].sum()

    v = verts.clone().requires_grad_(True)
    value(v).backward()
    eps = 1e-6
    fd = torch.zeros_like(verts)
    for i in range(3):
        for j in range(3):
            d = torch.zeros_like(verts)
            d[i, j] = eps
            fd[i, j] = (value(verts + d) - value(verts - d)) / (2 * eps)
    assert torch.allclose(v.grad, fd, atol=1e-5, rtol=1e-4)
    assert v.grad.abs().sum() > 0


def test_silhouette_loss_moves_mesh_to_target(ctx):
    torch.manual_seed(0)
    H = W = 32
    # target: the square [-0.5, 0.5]^2; start: a smaller, shifted square
    target = torch.zeros(1, H, W, 1)
    target[0, 8:24, 8:24] = 1.0
    verts = torch.tensor(
        [[-0.3, -0.2, 0.0], [0.4, -0.2, 0.0], [0.4, 0.5, 0.0], [-0.3, 0.5, 0.0]]
    ).requires_grad_(True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    mvp = torch.eye(4)[None]
    opt = torch.optim.Adam([verts], lr=0.02)
    losses = []
    for _ in range(40):
        pos = ctx.vertex_transform(verts, mvp)
        rast, _ = ctx.rasterize(pos, faces, (H, W))
        mask = (rast[..., 3:] > 0).float()
        mask = ctx.antialias(mask, rast, pos, faces)
        loss = ((mask - target) ** 2).mean()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.25 * losses[0]
    corners = verts.detach()[:, :2].abs()
    assert torch.allclose(corners, torch.full_like(corners, 0.5), atol=0.06)


def test_antialias_blends_only_at_silhouette(ctx):
    pos, tri = _triangle()
    rast, _ = ctx.rasterize(pos, tri, (16, 16))
    mask = (rast[..., 3:] > 0).float()
    aa = ctx.antialias(mask, rast, pos, tri)
    changed = (aa - mask).abs() > 1e-6
    assert changed.any()
    # interior pixels far from every edge keep their value
    assert aa[0, 6, 6, 0] == 1.0 and aa[0, 0, 0, 0] == 0.0
    assert torch.all((aa >= 0) & (aa <= 1))


@pytest.mark.skipif(
    not (torch.cuda.is_available() and _nvdiffrast_available()),
    reason="needs CUDA and nvdiffrast to compare the backends",
)
def test_torch_backend_matches_nvdiffrast():
    from threestudio.kernels.rasterizer import torch_interpolate, torch_rasterize

    cuda = NVDiffRasterizerContext("cuda", "cuda")
    verts = torch.tensor([[-1.0, -1.0, -2.0], [1.0, -0.5, -4.0], [0.0, 1.0, -3.0]], device="cuda")
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device="cuda")
    pos = cuda.vertex_transform(verts, _perspective().cuda()[None])
    rast_nv, _ = cuda.rasterize(pos, tri, (64, 64))
    rast_pt, _ = torch_rasterize(pos, tri, (64, 64))
    agree = (rast_nv[..., 3] == rast_pt[..., 3]).float().mean()
    assert agree > 0.99
    both = (rast_nv[..., 3] > 0) & (rast_pt[..., 3] > 0)
    assert torch.allclose(rast_nv[both][:, :3], rast_pt[both][:, :3], atol=1e-4)
    a_nv, _ = cuda.interpolate_one(verts, rast_nv, tri)
    a_pt, _ = torch_interpolate(verts[None], rast_pt, tri)
    assert torch.allclose(a_nv[both], a_pt[both], atol=1e-4)


def test_antialias_gradient_matches_finite_differences(ctx):
    from threestudio.kernels.rasterizer import torch_antialias, torch_rasterize

    pos0 = torch.tensor(
        [[[-0.52, -0.47, 0.0, 1.0], [0.61, -0.43, 0.0, 1.0], [-0.37, 0.58, 0.0, 1.0]]],
        dtype=torch.float64,
    )
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    weights = torch.rand(
        1, 16, 16, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )

    def loss(pos):
        rast, _ = torch_rasterize(pos, tri, (16, 16))
        mask = (rast[..., 3:] > 0).to(pos.dtype)
        return (torch_antialias(mask, rast, pos, tri).double() * weights).sum()

    pos = pos0.clone().requires_grad_(True)
    loss(pos).backward()
    assert pos.grad[..., :2].abs().sum() > 0
    eps = 1e-5
    for i in range(3):
        for j in range(2):
            d = torch.zeros_like(pos0)
            d[0, i, j] = eps
            fd = (loss(pos0 + d) - loss(pos0 - d)) / (2 * eps)
            assert pos.grad[0, i, j].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-6)


def test_batched_attributes_and_images(ctx):
    pos, tri = _triangle()
    pos2 = torch.cat([pos, pos * torch.tensor([-1.0, -1.0, 1.0, 1.0])])  # second image rotated 180°
    rast, _ = ctx.rasterize(pos2, tri, (16, 16))
    assert torch.equal(rast[1, ..., 3] > 0, (rast[0, ..., 3] > 0).flip(0, 1))
    attr = torch.stack([torch.eye(3), 2 * torch.eye(3)])
    out, _ = ctx.interpolate(attr, rast, tri)
    assert torch.allclose(out[1, 11, 11], 2 * torch.tensor([0.875, 0.0625, 0.0625]))
    assert torch.allclose(out[0, 4, 4], torch.tensor([0.875, 0.0625, 0.0625]))


def test_chunked_depth_test_matches_single_chunk(ctx, monkeypatch):
    import trimesh

    from threestudio.kernels import rasterizer as R

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)
    verts[:, 2] -= 2.5
    faces = torch.tensor(sphere.faces, dtype=torch.int32)
    pos = ctx.vertex_transform(verts, _perspective()[None])
    whole, _ = ctx.rasterize(pos, faces, (48, 48))
    monkeypatch.setattr(R, "CANDIDATE_BUDGET", 64)  # hundreds of chunks
    chunked, _ = ctx.rasterize(pos, faces, (48, 48))
    assert torch.equal(whole, chunked)
    # only front faces (normals towards the camera at the origin) are visible
    visible = torch.unique(whole[0, ..., 3].long() - 1)
    visible = visible[visible >= 0]
    v = verts[faces[visible].long()]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert ((n * -v.mean(1)).sum(-1) > 0).all()


def test_attribute_image_derivatives(ctx):
    pos, tri = _triangle()
    rast, rast_db = ctx.rasterize(pos, tri, (16, 16))
    # attributes: pixel x and 3 * pixel y of each corner (4, 4), (12, 4), (4, 12)
    attr = torch.tensor([[4.0, 12.0], [12.0, 12.0], [4.0, 36.0]])
    out, out_da = ctx.interpolate_one(attr, rast, tri, rast_db=rast_db, diff_attrs="all")
    assert out_da.shape == (1, 16, 16, 4)
    # layout (dA0/dx, dA0/dy, dA1/dx, dA1/dy)
    assert torch.allclose(out_da[0, 5, 5], torch.tensor([1.0, 0.0, 0.0, 3.0]), atol=1e-5)
    assert torch.allclose(out[0, 5, 5], torch.tensor([5.5, 16.5]), atol=1e-5)


def test_threestudio_camera_puts_up_at_row_zero(ctx):
    from threestudio.utils.ops import get_mvp_matrix, get_projection_matrix

    # camera at the origin looking down -z with +y up (OpenGL c2w = identity)
    mvp = get_mvp_matrix(
        torch.eye(4)[None], get_projection_matrix(math.radians(60), 1.0, 0.1, 10)[None]
    )
    above = torch.tensor([[-0.3, 0.2, -2.0], [0.3, 0.2, -2.0], [0.0, 0.6, -2.0]])  # up, in view
    rast, _ = ctx.rasterize(ctx.vertex_transform(above, mvp), torch.tensor([[0, 1, 2]]), (32, 32))
    rows = torch.nonzero(rast[0, ..., 3] > 0)[:, 0]
    assert rows.numel() > 0 and rows.max() < 16  # the upper half of the view is the first rows


def test_unknown_context_type_is_a_config_error_on_any_device():
    from threestudio.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="context_type"):
        NVDiffRasterizerContext("vulkan", "cpu")
