import pytest
import torch

import threestudio
from threestudio.utils.errors import MissingModelError

B = 2


def make_guidance(path, **cfg):
    return threestudio.find("deep-floyd-guidance")(
        {"pretrained_model_name_or_path": path, "half_precision_weights": False, **cfg}
    )


def test_pixel_sds_gradient_uses_noise_half_of_the_output(tiny_if_path, prompt_utils):
    guidance = make_guidance(tiny_if_path, guidance_scale=20.0)
    size = guidance.image_size
    rgb = torch.rand(B, size, size, 3, generator=torch.Generator().manual_seed(3))
    rgb.requires_grad_(True)
    zeros = torch.zeros(B)
    torch.manual_seed(0)
    out = guidance(rgb, prompt_utils, zeros, zeros, zeros + 1.5)
    out["loss_sds"].backward()

    torch.manual_seed(0)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [B])
    images = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn_like(images)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * images + (1 - a).sqrt() * noise
    with torch.no_grad():
        cond = guidance.unet(noisy, t, encoder_hidden_states=prompt_utils.cond.expand(B, -1, -1))
        uncond = guidance.unet(
            noisy, t, encoder_hidden_states=prompt_utils.uncond.expand(B, -1, -1)
        )
    assert cond.sample.shape[1] == 6  # noise and learned variance
    eps_cond, eps_uncond = cond.sample[:, :3], uncond.sample[:, :3]
    # the established IF form: cond + s (cond - uncond)
    expected = (1 - a) * (eps_cond + 20.0 * (eps_cond - eps_uncond) - noise)
    # images = 2 * rgb - 1 and d loss / d images = grad / B
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), 2 * expected / B, rtol=1e-4, atol=1e-4)


def test_guidance_eval_and_missing_model(tiny_if_path, prompt_utils, tmp_path):
    guidance = make_guidance(tiny_if_path)
    zeros = torch.zeros(B)
    out = guidance(torch.rand(B, 20, 20, 3), prompt_utils, zeros, zeros, zeros, guidance_eval=True)
    assert out["eval"]["imgs_final"].shape == (B, guidance.image_size, guidance.image_size, 3)
    with pytest.raises(MissingModelError, match="IF-I-XL-v1.0"):
        make_guidance(str(tmp_path / "IF-I-XL-v1.0"))
