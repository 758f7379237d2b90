"""zero123-unified-guidance: zero123-guidance's SDS in the unified conventions (one timestep per
batch, w = 1 - sqrt(alpha_bar), loss_sd)."""

import numpy as np
import pytest
import torch
from PIL import Image

import threestudio
from threestudio.utils.errors import ConfigError


@pytest.fixture(scope="module")
def cond_image(tmp_path_factory):
    rgba = (np.random.default_rng(0).random((20, 20, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 255
    path = tmp_path_factory.mktemp("cond") / "cond_rgba.png"
    Image.fromarray(rgba).save(path)
    return str(path)


def make(name, path, cond_image, **cfg):
    return threestudio.find(name)(
        {"pretrained_model_name_or_path": path, "cond_image_path": cond_image, **cfg}
    )


CAMERA = {
    "elevation": torch.tensor([0.0, 30.0]),
    "azimuth": torch.tensor([45.0, -60.0]),
    "camera_distances": torch.full([2], 1.2),
}


def test_one_timestep_per_batch(tiny_zero123_path, cond_image):
    guidance = make("zero123-unified-guidance", tiny_zero123_path, cond_image)
    draws = [guidance.sample_timesteps(4) for _ in range(20)]
    assert all(bool((t == t[0]).all()) for t in draws)
    assert len({int(t[0]) for t in draws}) > 1  # but a new one each step
    assert all(guidance.min_step <= int(t[0]) <= guidance.max_step for t in draws)


def test_gradient_is_zero123s_reweighted_and_named_loss_sd(tiny_zero123_path, cond_image):
    unified = make("zero123-unified-guidance", tiny_zero123_path, cond_image)
    plain = make("zero123-guidance", tiny_zero123_path, cond_image)  # w = 1 - alpha_bar
    t = torch.tensor([600, 600])
    grads = []
    for guidance, key in ((unified, "loss_sd"), (plain, "loss_sds")):
        guidance.sample_timesteps = lambda batch_size: t  # the same timestep for both
        rgb = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
        rgb.requires_grad_(True)
        torch.manual_seed(0)
        out = guidance(rgb, **CAMERA, rgb_as_latents=False)
        assert key in out and set(out) & {"loss_sd", "loss_sds"} == {key}
        out[key].backward()
        grads.append(rgb.grad)
    a = plain.scheduler.alphas_cumprod[600]
    ratio = (1 - a.sqrt()) / (1 - a)  # dreamfusion weighting against zero123-guidance's sds
    torch.testing.assert_close(grads[0], grads[1] * ratio, rtol=1e-4, atol=1e-7)


def test_what_is_not_ported_is_refused(tiny_zero123_path, cond_image):
    with pytest.raises(ConfigError, match="only 'sds'"):
        make("zero123-unified-guidance", tiny_zero123_path, cond_image, guidance_type="vsd")
    with pytest.raises(ConfigError, match="return_rgb_1step_orig"):
        make("zero123-unified-guidance", tiny_zero123_path, cond_image, return_rgb_1step_orig=True)
    with pytest.raises(ConfigError, match="weighting_strategy"):
        make("zero123-unified-guidance", tiny_zero123_path, cond_image, weighting_strategy="sds")
