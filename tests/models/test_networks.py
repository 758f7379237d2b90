"""Encodings and MLPs built by get_encoding/get_mlp: the encodings against closed forms, MLPs
training, config errors. The hash grid itself is tested in tests/kernels/test_hash_grid.py."""

import math

import pytest
import torch

from tests.tiny_hash_grid import grid_core, hash_config
from threestudio.models.networks import get_encoding, get_mlp
from threestudio.utils.errors import ConfigError


def test_progressive_band_hash_grid_masks_levels_over_steps():
    config = hash_config(
        otype="ProgressiveBandHashGrid", start_level=1, start_step=10, update_steps=5
    )
    encoding = get_encoding(3, config)
    with torch.no_grad():
        grid_core(encoding).params.fill_(1.0)  # every feature reads 1 where its level is on
    x = torch.rand(4, 3)
    for step, levels_on in [(0, 1), (10, 1), (14, 1), (15, 2), (20, 3), (25, 4), (1000, 4)]:
        encoding.do_update_step(0, step)
        out = encoding(x)
        assert torch.allclose(out[:, : 2 * levels_on], torch.ones(4, 2 * levels_on))
        assert torch.all(out[:, 2 * levels_on :] == 0)


def test_progressive_band_frequency_fades_bands_in():
    encoding = get_encoding(
        1, {"otype": "ProgressiveBandFrequency", "n_frequencies": 4, "n_masking_step": 100}
    )
    x = torch.full((1, 1), 0.3)
    encoding.do_update_step(0, 0)
    assert torch.all(encoding(x) == 0)
    encoding.do_update_step(0, 25)  # band 0 fully on, band 1 starting
    out = encoding(x).view(4, 2)
    assert torch.allclose(out[0], torch.tensor([math.sin(0.3), math.cos(0.3)]))
    assert torch.all(out[1:] == 0)
    encoding.do_update_step(0, 100)
    out = encoding(x).view(4, 2)
    expected = torch.tensor([[math.sin(2**k * 0.3), math.cos(2**k * 0.3)] for k in range(4)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_frequency_encoding_values_follow_tcnn_layout():
    encoding = get_encoding(2, {"otype": "Frequency", "n_frequencies": 3})
    assert encoding.n_output_dims == 12
    x = torch.tensor([[0.1, 0.35]])
    out = encoding(x).view(2, 3, 2)  # input dim, frequency, (sin, cos)
    for i in range(2):
        for k in range(3):
            phase = 2**k * math.pi * x[0, i].item()
            assert out[i, k, 0].item() == pytest.approx(math.sin(phase), abs=1e-6)
            assert out[i, k, 1].item() == pytest.approx(math.cos(phase), abs=1e-6)


def test_spherical_harmonics_closed_form_and_orthonormality():
    encoding = get_encoding(3, {"otype": "SphericalHarmonics", "degree": 3})
    up = torch.tensor([[0.0, 0.0, 1.0]])
    out = encoding(up * 0.5 + 0.5)[0]  # inputs in [0, 1]
    c0, c1 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi))
    assert out[0].item() == pytest.approx(c0, abs=1e-6)
    assert out[1:4].tolist() == pytest.approx([0.0, c1, 0.0], abs=1e-6)
    # Y_2^0 = sqrt(5/16pi) (3 z^2 - 1)
    assert out[6].item() == pytest.approx(math.sqrt(5 / (16 * math.pi)) * 2, abs=1e-6)
    torch.manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(200000, 3), dim=-1)
    sh = get_encoding(3, {"otype": "SphericalHarmonics", "degree": 4})(dirs * 0.5 + 0.5)
    gram = sh.T @ sh * (4 * math.pi / dirs.shape[0])  # Monte Carlo of the integral on S^2
    assert torch.allclose(gram, torch.eye(16), atol=0.03)


def test_include_xyz_and_identity():
    encoding = get_encoding(3, {"otype": "Identity", "include_xyz": True})
    x = torch.rand(5, 3)
    assert encoding.n_output_dims == 6
    assert torch.allclose(encoding(x), torch.cat([x * 2 - 1, x], -1))


def test_unknown_otype_is_a_one_line_config_error_with_suggestion():
    with pytest.raises(ConfigError) as info:
        get_encoding(3, {"otype": "HashGird"})
    assert "HashGrid" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="VanillaMLP"):
        get_mlp(3, 1, {"otype": "VanilaMLP", "n_neurons": 8, "n_hidden_layers": 1})
    with pytest.raises(ConfigError, match="relu"):
        get_mlp(
            3,
            1,
            {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1, "activation": "Relux"},
        )


MLP_CONFIGS = [
    {"otype": "VanillaMLP", "activation": "ReLU", "output_activation": "none"},
    {"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "none"},
    {"otype": "VanillaMLP", "activation": "Tanh", "output_activation": "none"},
    {"otype": "SphereInitVanillaMLP", "sphere_init_radius": 0.5},
]


@pytest.mark.parametrize("config", MLP_CONFIGS, ids=lambda c: c["otype"])
def test_mlps_build_and_fit_a_tiny_regression(config):
    torch.manual_seed(0)
    mlp = get_mlp(3, 1, {**config, "n_neurons": 32, "n_hidden_layers": 2})
    x = torch.rand(256, 3) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:2])  # odd: a bias-free tanh MLP can fit it
    optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = ((mlp(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_sphere_init_mlp_starts_near_a_sphere_sdf():
    torch.manual_seed(0)
    config = {"otype": "SphereInitVanillaMLP", "n_hidden_layers": 2, "sphere_init_radius": 0.5}
    mlp = get_mlp(3, 1, {**config, "n_neurons": 256})
    radius = torch.rand(1000, 1) * 1.5
    x = torch.nn.functional.normalize(torch.randn(1000, 3), dim=-1) * radius
    with torch.no_grad():
        sdf = mlp(x)[:, 0]
    target = radius[:, 0] - 0.5
    assert torch.corrcoef(torch.stack([sdf, target]))[0, 1] > 0.95
    assert torch.all(sdf[radius[:, 0] < 0.2] < 0) and torch.all(sdf[radius[:, 0] > 1.0] > 0)


def test_vanilla_mlp_gets_gradients_under_bf16_autocast():
    mlp = get_mlp(8, 2, {"otype": "VanillaMLP", "n_neurons": 16, "n_hidden_layers": 2})
    x = torch.rand(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(x)
    out.float().pow(2).mean().backward()
    for p in mlp.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_hash_grid_and_mlp_train_under_bf16_autocast():
    encoding = get_encoding(3, hash_config())
    mlp = get_mlp(
        encoding.n_output_dims, 1, {"otype": "FullyFusedMLP", "n_neurons": 16, "n_hidden_layers": 1}
    )
    x = torch.rand(64, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mlp(encoding(x))
    out.float().sum().backward()
    assert grid_core(encoding).params.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("otype", ["FullyFusedMLP", "CutlassMLP"])
def test_fused_mlp_fallback_initialises_like_tcnn(otype):
    # tcnn: Xavier-uniform on its padded widths (input 3 -> 16, output 1 -> 16), scale 1
    torch.manual_seed(0)
    mlp = get_mlp(3, 1, {"otype": otype, "n_neurons": 64, "n_hidden_layers": 2})
    weights = [m.weight for m in mlp.layers if isinstance(m, torch.nn.Linear)]
    assert [tuple(w.shape) for w in weights] == [(64, 3), (64, 64), (1, 64)]
    for w, (fan_in, fan_out) in zip(weights, [(16, 64), (64, 64), (64, 16)]):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        if w.numel() >= 192:  # the output layer has only 64 weights
            assert w.abs().max() > 0.95 * bound
            assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    # the plain VanillaMLP keeps PyTorch's default (kaiming-uniform, bound 1 / sqrt(fan_in))
    torch.manual_seed(0)
    vanilla = get_mlp(3, 1, {"otype": "VanillaMLP", "n_neurons": 64, "n_hidden_layers": 2})
    hidden = vanilla.layers[2].weight
    assert hidden.abs().max() <= 1 / math.sqrt(64) < 0.95 * math.sqrt(6.0 / 128)
