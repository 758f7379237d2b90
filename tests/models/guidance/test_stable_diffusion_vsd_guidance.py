import pytest
import torch

import threestudio
from threestudio.utils.errors import ConfigError

B = 2


def make_guidance(path, **cfg):
    return threestudio.find("stable-diffusion-vsd-guidance")(
        {
            "pretrained_model_name_or_path": path,
            "pretrained_model_name_or_path_lora": path,
            "half_precision_weights": False,
            **cfg,
        }
    )


def call(guidance, prompt_utils, rgb, c2w):
    zeros = torch.zeros(B)
    return guidance(rgb, prompt_utils, zeros, zeros, zeros + 1.5, c2w=c2w)


def test_lora_and_camera_embedding_train_and_frozen_unet_does_not(tiny_sd_path, prompt_utils):
    guidance = make_guidance(tiny_sd_path)
    trainable = {name for name, p in guidance.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("lora_layers.", "camera_embedding.")) for n in trainable)
    # the big frozen models are outside the state dict
    assert set(guidance.state_dict()) == {n for n, _ in guidance.named_parameters()}

    rgb = torch.rand(B, 16, 16, 3, requires_grad=True)
    out = call(guidance, prompt_utils, rgb, torch.randn(B, 4, 4))
    (out["loss_vsd"] + out["loss_lora"]).backward()
    assert rgb.grad.abs().sum() > 0
    # lora_layers alternates A and B; B starts at zero, so B is what the first step moves
    b_grads = [p.grad for i, m in enumerate(guidance.lora_layers) if i % 2 for p in m.parameters()]
    assert b_grads and all(g is not None for g in b_grads)
    assert sum(float(g.abs().sum()) for g in b_grads) > 0
    assert guidance.camera_embedding.linear_1.weight.grad.abs().sum() > 0
    for unet in (guidance.frozen.unet, guidance.frozen.unet_lora):
        frozen = [
            p for n, p in unet.named_parameters() if "lora_" not in n and "class_embedding" not in n
        ]
        assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)

    # one optimiser step moves the LoRA weights (lora_B starts at zero)
    optimizer = torch.optim.SGD(guidance.parameters(), lr=1.0)
    before = {n: p.detach().clone() for n, p in guidance.named_parameters()}
    optimizer.step()
    assert any(not torch.equal(before[n], p) for n, p in guidance.named_parameters())


def test_vsd_gradient_vanishes_when_lora_model_equals_pretrained(tiny_sd_path, prompt_utils):
    guidance = make_guidance(tiny_sd_path, guidance_scale=3.0, guidance_scale_lora=3.0)
    for p in guidance.camera_embedding.parameters():
        torch.nn.init.zeros_(p)  # class embedding adds exactly zero; LoRA B is zero at init
    latents = torch.randn(B, 8, 8, 4, requires_grad=True)
    zeros = torch.zeros(B)
    out = guidance(
        latents, prompt_utils, zeros, zeros, zeros, rgb_as_latents=True, c2w=torch.randn(B, 4, 4)
    )
    out["loss_vsd"].backward()
    assert float(latents.grad.abs().max()) < 1e-5

    # a different CFG scale for the LoRA branch gives w * (s - s_lora) * (cond - uncond)
    guidance = make_guidance(tiny_sd_path, guidance_scale=3.0, guidance_scale_lora=1.0)
    for p in guidance.camera_embedding.parameters():
        torch.nn.init.zeros_(p)
    latents = latents.detach().requires_grad_(True)
    torch.manual_seed(0)
    out = guidance(
        latents, prompt_utils, zeros, zeros, zeros, rgb_as_latents=True, c2w=torch.randn(B, 4, 4)
    )
    out["loss_vsd"].backward()
    torch.manual_seed(0)
    torch.randn(B, 4, 4)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [B])
    x = latents.detach().permute(0, 3, 1, 2)
    noise = torch.randn_like(x)
    a = guidance.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x + (1 - a).sqrt() * noise
    unet = guidance.frozen.unet
    with torch.no_grad():
        cond = unet(noisy, t, encoder_hidden_states=prompt_utils.cond.expand(B, -1, -1)).sample
        uncond = unet(noisy, t, encoder_hidden_states=prompt_utils.uncond.expand(B, -1, -1)).sample
    expected = (1 - a) * 2.0 * (cond - uncond)
    torch.testing.assert_close(latents.grad.permute(0, 3, 1, 2) * B, expected, rtol=1e-3, atol=1e-5)


def test_camera_condition_type(tiny_sd_path, prompt_utils):
    guidance = make_guidance(tiny_sd_path, camera_condition_type="mvp", lora_cfg_training=False)
    with pytest.raises(ValueError, match="mvp_mtx"):
        call(guidance, prompt_utils, torch.rand(B, 16, 16, 3), torch.randn(B, 4, 4))
    # the LoRA loss sees the mvp matrix: a different matrix gives a different loss
    zeros = torch.zeros(B)
    rgb = torch.rand(B, 16, 16, 3)
    losses = []
    for scale in (1.0, 50.0):
        torch.manual_seed(0)
        out = guidance(rgb, prompt_utils, zeros, zeros, zeros, mvp_mtx=scale * torch.ones(B, 4, 4))
        losses.append(float(out["loss_lora"]))
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)
    with pytest.raises(ConfigError, match="camera_condition_type"):
        make_guidance(tiny_sd_path, camera_condition_type="intrinsics")


def test_v_prediction_lora_model_is_read_as_noise(tiny_sd_path, tmp_path):
    import shutil

    from diffusers import DDPMScheduler

    lora_path = tmp_path / "v_model"
    shutil.copytree(tiny_sd_path, lora_path)
    scheduler = DDPMScheduler.from_pretrained(tiny_sd_path, subfolder="scheduler")
    DDPMScheduler.from_config(scheduler.config, prediction_type="v_prediction").save_pretrained(
        lora_path / "scheduler"
    )
    guidance = threestudio.find("stable-diffusion-vsd-guidance")(
        {
            "pretrained_model_name_or_path": tiny_sd_path,
            "pretrained_model_name_or_path_lora": str(lora_path),
            "half_precision_weights": False,
        }
    )
    for p in guidance.camera_embedding.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(B, 4, 8, 8)
    t = torch.tensor([100, 800])
    text = torch.randn(B, 7, 32)
    eps = guidance.forward_lora(x, t, text, torch.zeros(B, 16))
    with torch.no_grad():
        v = guidance.frozen.unet(x, t, encoder_hidden_states=text).sample
    a = guidance.scheduler_lora.alphas_cumprod[t].view(-1, 1, 1, 1)
    # x_t = sqrt(a) x0 + sqrt(1 - a) eps and v = sqrt(a) eps - sqrt(1 - a) x0
    torch.testing.assert_close(eps, a.sqrt() * v + (1 - a).sqrt() * x, rtol=1e-4, atol=1e-5)
