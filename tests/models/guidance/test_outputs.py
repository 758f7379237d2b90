"""Every built-in guidance returns scalars for all its outputs but the losses: systems (and
published extensions) log each non-``loss_*`` output with ``self.log``, which takes only numbers
and one-element tensors, and would fail on per-sample ``[B]`` tensors for B > 1."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import threestudio

B = 2


def lightning_log(name, value):
    """What LightningModule.log accepts: a number or a one-element tensor."""
    if torch.is_tensor(value):
        assert value.numel() == 1 and value.ndim == 0, f"{name} has shape {tuple(value.shape)}"
        float(value)
    else:
        assert isinstance(value, (int, float)), f"{name} is a {type(value).__name__}"


def log_outputs(out, images=()):
    logged = []
    for name, value in out.items():
        if name.startswith("loss_"):
            assert torch.is_tensor(value) and value.ndim == 0, name
        elif name not in images:
            lightning_log(name, value)
            logged.append(name)
    return logged


def batch():
    zeros = torch.zeros(B)
    return {
        "elevation": zeros + 10,
        "azimuth": torch.tensor([0.0, 90.0]),
        "camera_distances": zeros + 1.5,
        "c2w": torch.randn(B, 4, 4),
        "mvp_mtx": torch.randn(B, 4, 4),
    }


@pytest.fixture(scope="module")
def cond_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("cond") / "cond.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(
        path
    )
    return str(path)


@pytest.mark.parametrize(
    "name, extra",
    [
        ("stable-diffusion-guidance", {}),
        ("stable-diffusion-guidance", {"use_sjc": True}),
        ("stable-diffusion-guidance", {"use_img_loss": True, "sqrt_anneal": True}),
        ("stable-diffusion-vsd-guidance", {"use_img_loss": True}),
        ("stable-diffusion-unified-guidance", {}),
        ("stable-diffusion-unified-guidance", {"guidance_type": "vsd", "sqrt_anneal": True}),
        ("stable-diffusion-sdi-guidance", {}),
    ],
)
def test_text_guidances_return_scalars(tiny_sd_path, prompt_utils, name, extra):
    cfg = {"pretrained_model_name_or_path": tiny_sd_path, "half_precision_weights": False}
    if name == "stable-diffusion-vsd-guidance":
        cfg["pretrained_model_name_or_path_lora"] = tiny_sd_path
    guidance = threestudio.find(name)({**cfg, **extra})
    guidance.do_update_step(0, 10)
    out = guidance(torch.rand(B, 16, 16, 3), prompt_utils, **batch())
    assert {"grad_norm", "min_step", "max_step", "timestep"} <= set(log_outputs(out))


def test_deep_floyd_returns_scalars(tiny_if_path, prompt_utils):
    guidance = threestudio.find("deep-floyd-guidance")(
        {"pretrained_model_name_or_path": tiny_if_path, "half_precision_weights": False}
    )
    out = guidance(torch.rand(B, 20, 20, 3), prompt_utils, **batch())
    assert {"grad_norm", "min_step", "max_step", "timestep"} <= set(log_outputs(out))


@pytest.mark.parametrize(
    "name", ["zero123-guidance", "stable-zero123-guidance", "zero123-unified-guidance"]
)
def test_zero123_guidances_return_scalars(tiny_zero123_path, cond_image, name):
    guidance = threestudio.find(name)(
        {"pretrained_model_name_or_path": tiny_zero123_path, "cond_image_path": cond_image}
    )
    out = guidance(torch.rand(B, 16, 16, 3), **batch())
    assert {"grad_norm", "min_step", "max_step", "timestep"} <= set(log_outputs(out))


@pytest.mark.parametrize("use_sds", [True, False])
def test_editing_guidances_return_scalars(
    tiny_ip2p_path, tiny_controlnet_path, prompt_utils, use_sds
):
    common = {"half_precision_weights": False, "use_sds": use_sds, "diffusion_steps": 2}
    ip2p = threestudio.find("stable-diffusion-instructpix2pix-guidance")(
        {"pretrained_model_name_or_path": tiny_ip2p_path, **common}
    )
    controlnet = threestudio.find("stable-diffusion-controlnet-guidance")(
        {
            "pretrained_model_name_or_path": tiny_controlnet_path,
            "controlnet_name_or_path": os.path.join(tiny_controlnet_path, "controlnet"),
            "control_type": "input_normal",
            **common,
        }
    )
    rgb = torch.rand(B, 16, 16, 3)
    for guidance in (ip2p, controlnet):
        out = guidance(rgb, rgb, prompt_utils, **batch())
        # edit_images is the editing guidances' image output (as established), not a log value
        logged = log_outputs(out, images=("edit_images",))
        assert "timestep" in logged
        if use_sds:
            assert {"grad_norm", "min_step", "max_step"} <= set(logged)
