import random

import pytest
import torch

import threestudio
from threestudio.utils.errors import ConfigError


def diffuse_material(**overrides):
    cfg = {"albedo_activation": "none", "ambient_only_steps": 0}
    cfg.update(overrides)
    material = threestudio.find("diffuse-with-point-light-material")(cfg)
    material.do_update_step(0, 10)
    return material


def shading_case():
    features = torch.tensor([[0.5, 0.2, 1.0], [0.8, 0.8, 0.4], [0.3, 0.6, 0.9]])
    positions = torch.zeros(3, 3)
    normals = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    # light straight above: cos = 1, 0 (grazing), 0.8
    lights = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [0.0, 0.0, 2.0]])
    return features, positions, normals, lights, torch.tensor([[1.0], [0.0], [0.8]])


def test_diffuse_shading_by_hand():
    material = diffuse_material(
        ambient_light_color=(0.1, 0.2, 0.3), diffuse_light_color=(0.9, 0.8, 0.7)
    )
    material.eval()
    features, positions, normals, lights, cos = shading_case()
    rgb = material(features, positions, normals, lights)
    ambient, diffuse = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.9, 0.8, 0.7])
    torch.testing.assert_close(rgb, features * (ambient + diffuse * cos))
    # a light behind the surface gives ambient only
    back = material(features, positions, normals, -lights)
    torch.testing.assert_close(back, features * ambient)
    # explicit shading modes and ambient_ratio
    torch.testing.assert_close(
        material(features, positions, normals, lights, shading="textureless"),
        ambient + diffuse * cos,
    )
    torch.testing.assert_close(
        material(features, positions, normals, lights, shading="albedo"), features
    )
    torch.testing.assert_close(
        material(features, positions, normals, lights, ambient_ratio=0.25),
        features * (0.25 + 0.75 * cos),
    )
    with pytest.raises(ConfigError, match="shading"):
        material(features, positions, normals, lights, shading="phong")


def test_training_shading_mix_follows_probabilities():
    material = diffuse_material(diffuse_prob=0.75, textureless_prob=0.4)
    material.train()
    random.seed(0)
    features, positions, normals, lights, cos = shading_case()
    expected = {
        "albedo": features,
        "textureless": 0.1 + 0.9 * cos.expand(-1, 3),
        "diffuse": features * (0.1 + 0.9 * cos),
    }
    counts = dict.fromkeys(expected, 0)
    n = 4000
    for _ in range(n):
        rgb = material(features, positions, normals, lights)
        match = [k for k, v in expected.items() if torch.allclose(rgb, v)]
        assert len(match) == 1
        counts[match[0]] += 1
    # expected: albedo 0.25, textureless 0.75 * 0.4 = 0.3, diffuse 0.45 (3 sigma ~ 0.022)
    assert abs(counts["albedo"] / n - 0.25) < 0.025
    assert abs(counts["textureless"] / n - 0.30) < 0.025
    assert abs(counts["diffuse"] / n - 0.45) < 0.025


def test_ambient_only_steps_and_export():
    material = threestudio.find("diffuse-with-point-light-material")({"ambient_only_steps": 100})
    assert material.requires_normal
    features, positions, normals, lights, _ = shading_case()
    material.do_update_step(0, 50)
    material.train()
    for _ in range(20):
        rgb = material(features, positions, normals, lights)
        torch.testing.assert_close(rgb, torch.sigmoid(features))
    material.do_update_step(0, 100)
    material.eval()
    assert not torch.allclose(
        material(features, positions, normals, lights), torch.sigmoid(features)
    )
    torch.testing.assert_close(material.export(features)["albedo"], torch.sigmoid(features))


def test_ambient_only_on_test_shows_albedo_outside_training():
    material = diffuse_material(ambient_only_on_test=True, diffuse_prob=1.0, textureless_prob=0.0)
    features, positions, normals, lights, cos = shading_case()
    material.train()  # training still shades: albedo * (ambient + diffuse * cos)
    torch.testing.assert_close(
        material(features, positions, normals, lights), features * (0.1 + 0.9 * cos)
    )
    material.eval()
    torch.testing.assert_close(material(features, positions, normals, lights), features)


def test_soft_shading_splits_light_at_random():
    material = diffuse_material(soft_shading=True, diffuse_prob=1.0, textureless_prob=1.0)
    material.train()
    features, positions, normals, lights, cos = shading_case()
    random.seed(3)
    seen = set()
    for _ in range(10):
        rgb = material(features, positions, normals, lights)
        # textureless = a + (1 - a) * cos, with the same random a for every channel
        a = rgb[1, 0].item()  # cos = 0 on the second point
        torch.testing.assert_close(rgb, a + (1 - a) * cos.expand(-1, 3))
        seen.add(round(a, 4))
    assert len(seen) > 5


def test_neural_radiance_material_is_view_dependent_and_trainable():
    torch.manual_seed(0)
    material = threestudio.find("neural-radiance-material")(
        {
            "input_feature_dims": 4,
            "mlp_network_config": {"otype": "VanillaMLP", "n_neurons": 16, "n_hidden_layers": 2},
        }
    )
    assert not material.requires_normal
    features = torch.randn(2, 5, 4)
    d1 = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    out = material(features, viewdirs=d1)
    assert out.shape == (2, 5, 3) and ((out > 0) & (out < 1)).all()
    assert not torch.allclose(out, material(features, viewdirs=-d1))
    # fit a colour that depends on the view direction only
    optim = torch.optim.Adam(material.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        d = torch.nn.functional.normalize(torch.randn(256, 3), dim=-1)
        loss = ((material(torch.zeros(256, 4), viewdirs=d) - (d + 1) / 2) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        first = first or loss.item()
    assert loss.item() < 0.1 * first


def test_no_material_passthrough_and_network():
    material = threestudio.find("no-material")({"color_activation": "none"})
    features = torch.rand(3, 3)
    torch.testing.assert_close(material(features), features)
    torch.testing.assert_close(material.export(features)["albedo"], features)
    with pytest.raises(ValueError, match="n_output_dims"):
        material(torch.rand(3, 5))
    material = threestudio.find("no-material")(
        {
            "input_feature_dims": 5,
            "mlp_network_config": {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1},
        }
    )
    out = material(torch.rand(2, 4, 5))
    assert out.shape == (2, 4, 3) and ((out > 0) & (out < 1)).all()


def test_sd_latent_adapter_is_the_fixed_linear_map():
    material = threestudio.find("sd-latent-adapter-material")({})
    latents = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([[0.649, 0.6035, 0.604], [0.408, 0.3645, 0.2635], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(material(latents), expected)
    with pytest.raises(ValueError, match="4 latent"):
        material(torch.zeros(2, 3))


def test_hybrid_rgb_latent_material():
    material = threestudio.find("hybrid-rgb-latent-material")({"n_output_dims": 7})
    assert material.requires_normal
    features = torch.randn(4, 7, requires_grad=True)
    out = material(features)
    torch.testing.assert_close(out[:, :3], torch.sigmoid(features[:, :3]))
    torch.testing.assert_close(out[:, 3:], features[:, 3:])
    out.sum().backward()  # no in-place write broke autograd
    assert features.grad is not None


def test_unknown_material_key_is_a_config_error():
    with pytest.raises(ConfigError, match="diffuse_probability"):
        threestudio.find("diffuse-with-point-light-material")({"diffuse_probability": 0.5})
    with pytest.raises(ConfigError, match="diffuse_prob"):
        threestudio.find("diffuse-with-point-light-material")({"diffuse_prob": 1.5})
