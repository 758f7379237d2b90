"""The hash-grid kernel: against a naive reference and finite differences, its layout and
checkpoint keys, and tcnn-vs-PyTorch where both run."""

import pytest
import torch

from tests.tiny_hash_grid import grid_core, hash_config
from threestudio.kernels import hash_grid
from threestudio.kernels.hash_grid import HashGridLayout, use_tcnn
from threestudio.models.networks import get_encoding

PRIMES = (1, 2654435761, 805459861)


def naive_hash_grid(x, params, layout: HashGridLayout):
    """Per-level, per-corner reference with int64 arithmetic and plain autograd."""
    table = params.view(-1, layout.n_features)
    d = x.shape[-1]
    outs = []
    for level in range(layout.n_levels):
        pos = x * layout.scales[level] + 0.5
        grid = torch.floor(pos)
        frac = pos - grid
        grid = grid.long()
        feat = 0
        for corner in range(2**d):
            bits = torch.tensor([(corner >> i) & 1 for i in range(d)])
            coord = grid + bits
            weight = torch.prod(torch.where(bits.bool(), frac, 1 - frac), -1, keepdim=True)
            if layout.dense[level]:
                res = layout.resolutions[level]
                index = sum(coord[:, i] * res**i for i in range(d))
            else:
                index = coord[:, 0] * PRIMES[0]
                for i in range(1, d):
                    index = index ^ (coord[:, i] * PRIMES[i])
                index = index & 0xFFFFFFFF  # tcnn hashes in uint32
            index = index % layout.sizes[level] + layout.offsets[level]
            feat = feat + weight * table[index]
        outs.append(feat)
    return torch.cat(outs, -1)


def make_grid(n_input_dims=3, dtype=torch.float64, **overrides):
    torch.manual_seed(0)
    encoding = get_encoding(n_input_dims, hash_config(**overrides)).to(dtype)
    with torch.no_grad():
        grid_core(encoding).params.normal_()
    return encoding


def test_layout_follows_tcnn_rules():
    core = grid_core(make_grid(per_level_scale=2.0))
    layout = core.layout
    assert layout.resolutions == (4, 8, 16, 32)  # ceil(4 * 2^l - 1) + 1
    assert layout.dense == (True, True, False, False)
    for res, size, dense in zip(layout.resolutions, layout.sizes, layout.dense):
        assert size % 8 == 0 and size <= 2**10
        assert dense == (res**3 <= size)
    assert layout.offsets[-1] * 2 == core.params.numel()


def test_dense_level_reproduces_trilinear_function():
    encoding = make_grid(n_levels=1, base_resolution=8, n_features_per_level=1)
    core = grid_core(encoding)
    layout = core.layout
    res, scale = layout.resolutions[0], layout.scales[0]
    assert layout.dense[0]

    def trilinear(p):  # any function linear along each axis is reproduced exactly
        return 0.3 + 1.1 * p[..., 0] - 0.7 * p[..., 1] + 0.4 * p[..., 2] + 0.05 * p.prod(-1)

    vertices = torch.stack(
        torch.meshgrid(*[torch.arange(res, dtype=torch.float64)] * 3, indexing="ij"), -1
    ).view(-1, 3)
    index = (vertices[:, 0] + vertices[:, 1] * res + vertices[:, 2] * res**2).long()
    with torch.no_grad():
        core.params.zero_()
        core.params[index] = trilinear(vertices)
    x = torch.rand(500, 3, dtype=torch.float64) * 0.8 + 0.1  # away from the wrapped border
    out = encoding(x)[:, 0]
    expected = trilinear(x * scale + 0.5)  # grid vertex i sits at pos = i
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_input_dims,n_features", [(2, 2), (3, 2), (3, 1), (3, 4)])
def test_matches_naive_reference_values_and_gradients(n_input_dims, n_features):
    # 1, 2 and more features take different scatter paths
    encoding = make_grid(n_input_dims, n_features_per_level=n_features)
    core = grid_core(encoding)
    x = torch.rand(300, n_input_dims, dtype=torch.float64, requires_grad=True)
    out = encoding(x)
    ref = naive_hash_grid(x, core.params, core.layout)
    assert torch.allclose(out, ref, atol=1e-12)
    upstream = torch.randn_like(out)
    grad_x, grad_p = torch.autograd.grad(out, [x, core.params], upstream)
    ref_x, ref_p = torch.autograd.grad(ref, [x, core.params], upstream)
    assert torch.allclose(grad_p, ref_p, atol=1e-10)
    assert torch.allclose(grad_x, ref_x, atol=1e-8)


def test_blocks_of_points_and_transpose_blocks_match_reference(monkeypatch):
    # large inputs are processed in blocks of points; small blocks here, and a point count
    # that is no multiple of them, run that path against the reference
    monkeypatch.setattr(hash_grid, "POINT_BLOCK", 128)
    monkeypatch.setattr(hash_grid, "_TRANSPOSE_BLOCK", 48)
    encoding = make_grid()
    core = grid_core(encoding)
    x = torch.rand(300, 3, dtype=torch.float64, requires_grad=True)
    out = encoding(x)
    ref = naive_hash_grid(x, core.params, core.layout)
    assert torch.allclose(out, ref, atol=1e-12)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, core.params], upstream)
    refs = torch.autograd.grad(ref, [x, core.params], upstream)
    for grad, expected in zip(grads, refs):
        assert torch.allclose(grad, expected, atol=1e-8)


def test_int32_hash_matches_uint32_reference_at_fine_levels():
    # resolutions up to ~4000: coordinates times the primes overflow 32 bits
    encoding = make_grid(n_levels=3, base_resolution=64, per_level_scale=8.0, log2_hashmap_size=12)
    core = grid_core(encoding)
    assert not core.layout.dense[-1]
    x = torch.rand(500, 3, dtype=torch.float64)
    assert torch.allclose(encoding(x), naive_hash_grid(x, core.params, core.layout), atol=1e-12)


def test_gradients_match_finite_differences():
    encoding = make_grid(n_levels=2, log2_hashmap_size=8)
    core = grid_core(encoding)
    x = torch.rand(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, p: encoding(x), (x, core.params), eps=1e-7)


def test_double_backward_through_input_gradient():
    # eikonal-style loss on analytic normals: needs d(d out/dx)/d params and d/d upstream
    encoding = make_grid()
    core = grid_core(encoding)
    weights = torch.randn(encoding.n_output_dims, dtype=torch.float64, requires_grad=True)
    x = torch.rand(50, 3, dtype=torch.float64, requires_grad=True)

    def eikonal(features_fn):
        sdf = features_fn(x) @ weights
        (normal,) = torch.autograd.grad(sdf.sum(), x, create_graph=True)
        loss = ((normal.norm(dim=-1) - 1) ** 2).mean()
        return torch.autograd.grad(loss, [core.params, weights])

    fast = eikonal(encoding)
    ref = eikonal(lambda x: naive_hash_grid(x, core.params, core.layout))
    for a, b in zip(fast, ref):
        assert torch.allclose(a, b, atol=1e-8)


def test_float32_batch_shapes_and_default_init():
    encoding = get_encoding(3, hash_config())
    params = grid_core(encoding).params
    assert params.dtype == torch.float32 and params.abs().max() <= 1e-4
    x = torch.rand(2, 5, 3)
    assert encoding(x).shape == (2, 5, encoding.n_output_dims)
    assert encoding.n_output_dims == 8


def test_state_dict_keys_match_tcnn_era_checkpoints():
    # threestudio checkpoints trained with tcnn store the table as encoding.encoding.params
    plain = get_encoding(3, hash_config())
    progressive = get_encoding(
        3, hash_config(otype="ProgressiveBandHashGrid", start_level=1, start_step=0, update_steps=1)
    )
    assert list(plain.state_dict()) == ["encoding.encoding.params"]
    assert list(progressive.state_dict()) == ["encoding.encoding.params"]
    progressive.load_state_dict(plain.state_dict())
    progressive.do_update_step(0, 100)
    x = torch.rand(10, 3)
    assert torch.equal(progressive(x), plain(x))


def _tcnn_available():
    try:
        import tinycudann  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _tcnn_available(), reason="needs tinycudann and a CUDA device")
def test_tcnn_and_pytorch_backends_agree():
    encoding = get_encoding(3, hash_config(log2_hashmap_size=14, n_levels=8)).cuda()
    core = grid_core(encoding)
    with torch.no_grad():
        core.params.uniform_(-1, 1)
    x = torch.rand(4096, 3, device="cuda")
    assert use_tcnn(x)
    out_tcnn = encoding(x)
    (grad_tcnn,) = torch.autograd.grad(out_tcnn.sum(), core.params)
    consts = hash_grid.HashGridTensors(core.layout, x.device)
    out_torch = hash_grid._HashGridInterpolation.apply(x, core.params, core.layout, consts)
    (grad_torch,) = torch.autograd.grad(out_torch.sum(), core.params)
    assert torch.allclose(out_tcnn, out_torch, atol=1e-4)
    assert torch.allclose(grad_tcnn, grad_torch, atol=1e-3)
