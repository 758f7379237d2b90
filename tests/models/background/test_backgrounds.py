import math
import random

import pytest
import torch
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError

TINY_MLP = {"otype": "VanillaMLP", "n_neurons": 8, "n_hidden_layers": 1}


def random_dirs(b=2, h=3, w=4):
    return F.normalize(torch.randn(b, h, w, 3), dim=-1)


def test_solid_color_is_exact_and_learnable():
    bg = threestudio.find("solid-color-background")({"color": (0.2, 0.4, 0.6)})
    out = bg(random_dirs())
    assert out.shape == (2, 3, 4, 3)
    torch.testing.assert_close(out, torch.tensor([0.2, 0.4, 0.6]).expand(2, 3, 4, 3))
    assert len(list(bg.parameters())) == 0
    learned = threestudio.find("solid-color-background")(
        {"color": (0.2, 0.4, 0.6), "learned": True}
    )
    learned(random_dirs()).sum().backward()
    torch.testing.assert_close(learned.env_color.grad, torch.full((3,), 24.0))
    with pytest.raises(ConfigError, match="color"):
        threestudio.find("solid-color-background")({"color": (0.2, 0.4)})


def test_solid_color_random_aug_only_in_training():
    bg = threestudio.find("solid-color-background")({"random_aug": True, "random_aug_prob": 1.0})
    bg.train()
    out = bg(random_dirs())
    assert not torch.allclose(out, torch.ones_like(out))
    torch.testing.assert_close(out, out[:, :1, :1].expand_as(out))  # one colour per image
    bg.eval()
    torch.testing.assert_close(bg(random_dirs()), torch.ones(2, 3, 4, 3))


def test_env_map_random_aug_in_training_and_eval_color():
    torch.manual_seed(0)
    bg = threestudio.find("neural-environment-map-background")(
        {
            "mlp_network_config": TINY_MLP,
            "random_aug": True,
            "random_aug_prob": 0.5,
            "eval_color": (0.1, 0.2, 0.3),
        }
    )
    dirs = random_dirs(b=3)
    bg.train()
    random.seed(0)
    n_aug = 0
    for _ in range(400):
        out = bg(dirs)
        if torch.allclose(out, out[:, :1, :1].expand_as(out)):  # solid per image: augmented
            n_aug += 1
            assert not torch.allclose(out[0, 0, 0], out[1, 0, 0])  # one colour per image
    assert abs(n_aug / 400 - 0.5) < 0.1
    bg.eval()
    torch.testing.assert_close(bg(dirs), torch.tensor([0.1, 0.2, 0.3]).expand(3, 3, 4, 3))


def test_env_map_shared_aug_and_direction_dependence():
    bg = threestudio.find("neural-environment-map-background")(
        {
            "mlp_network_config": TINY_MLP,
            "random_aug": True,
            "random_aug_prob": 1.0,
            "share_aug_bg": True,
        }
    )
    bg.train()
    out = bg(random_dirs(b=4))
    torch.testing.assert_close(out, out[:1, :1, :1].expand_as(out))
    # without augmentation the colour is a function of the direction and trains
    bg = threestudio.find("neural-environment-map-background")({"mlp_network_config": TINY_MLP})
    bg.eval()
    dirs = random_dirs()
    out = bg(dirs)
    assert out.shape == (2, 3, 4, 3) and ((out > 0) & (out < 1)).all()
    torch.testing.assert_close(bg(dirs.flip(0)), out.flip(0))
    out.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bg.parameters())


def test_textured_background_reads_the_texel_of_a_direction():
    torch.manual_seed(0)
    bg = threestudio.find("textured-background")(
        {"height": 4, "width": 8, "color_activation": "none"}
    )
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    theta = (rows + 0.5) / 4 * math.pi  # polar angle from +z
    phi = ((cols + 0.5) / 8 - 0.5) * 2 * math.pi  # azimuth from +x
    dirs = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)
    out = bg(dirs[None])
    torch.testing.assert_close(out[0], bg.texture[0].permute(1, 2, 0).detach(), atol=1e-5, rtol=0)


def test_unknown_background_key_is_a_config_error():
    with pytest.raises(ConfigError, match="random_aug_probability"):
        threestudio.find("neural-environment-map-background")({"random_aug_probability": 0.5})
