"""scripts/convert_zero123.py: a tiny checkpoint in the original latent-diffusion layout
(model.diffusion_model.*, first_stage_model.*, cc_projection.*, cond_stage_model.*), written
from a tiny Zero-1-to-3 folder by the inverse of diffusers' key mapping, converts back into that
folder's weights, and the guidances load the result and score a render as they score the
original folder."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import threestudio
from tests.scripts.script_module import load_script
from threestudio.utils.paths import REPO_ROOT as REPO

SCRIPT = Path(REPO) / "scripts" / "convert_zero123.py"


def plain_config(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


# ---------- diffusers -> original names (the inverse of diffusers' LDM converters) ----------

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def ldm_unet_key(key: str, layers: int, up_attentions: set) -> str:
    def resnet(rest):
        first, tail = rest.split(".", 1)
        return f"{RESNET[first]}.{tail}"

    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    prefix, _, leaf = key.rpartition(".")
    if prefix in fixed:
        return f"{fixed[prefix]}.{leaf}"
    n = layers + 1  # input/output blocks per diffusers block
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{n * i + j + 1}.0.{resnet(rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{n * i + j + 1}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{n * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    layers_up = layers + 1  # an up block has one resnet more
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{layers_up * i + j}.0.{resnet(rest)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{layers_up * i + j}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        i = int(m[1])
        slot = 2 if i in up_attentions else 1
        return f"output_blocks.{layers_up * i + layers_up - 1}.{slot}.conv.{m[2]}"
    raise KeyError(key)


VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def ldm_vae_key(key: str, n_blocks: int) -> str:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    key = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", key)
    key = re.sub(
        r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", key
    )
    # the original decoder numbers its up blocks from the lowest resolution
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.resnets",
        lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.block",
        key,
    )
    key = re.sub(
        r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
        lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample",
        key,
    )
    return key


def original_checkpoint(pipe) -> dict:
    unet_cfg, vae_cfg = pipe.unet.config, pipe.vae.config
    up_attentions = {i for i, t in enumerate(unet_cfg.up_block_types) if "CrossAttn" in t}
    state = {}
    for key, value in pipe.unet.state_dict().items():
        ldm = ldm_unet_key(key, unet_cfg.layers_per_block, up_attentions)
        state[f"model.diffusion_model.{ldm}"] = value.clone()
    for key, value in pipe.vae.state_dict().items():
        ldm = ldm_vae_key(key, len(vae_cfg.block_out_channels))
        if ".attn_1." in ldm and ldm.endswith("weight") and ".norm." not in ldm:
            value = value[:, :, None, None]  # 1x1 convolutions in the original
        state[f"first_stage_model.{ldm}"] = value.clone()
    state["cc_projection.weight"] = pipe.cc_projection.projection.weight.clone()
    state["cc_projection.bias"] = pipe.cc_projection.projection.bias.clone()
    # the original's own CLIP copy, which the script does not read
    state["cond_stage_model.model.visual.proj"] = torch.randn(4, 4)
    return {"state_dict": state, "global_step": 105000}


@pytest.fixture(scope="module")
def tiny_zero123_path(tmp_path_factory):
    from tests.tiny_pipelines import build_tiny_zero123

    return build_tiny_zero123(tmp_path_factory.mktemp("tiny_zero123"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_zero123_path):
    from extern.zero123 import Zero123Pipeline

    root = tmp_path_factory.mktemp("convert")
    pipe = Zero123Pipeline.from_pretrained(tiny_zero123_path)
    ckpt = root / "105000.ckpt"
    torch.save(original_checkpoint(pipe), ckpt)
    out = root / "zero123-diffusers"
    load_script("scripts/convert_zero123.py").convert(
        str(ckpt),
        str(out),
        clip=str(Path(tiny_zero123_path) / "image_encoder"),
        unet_config=plain_config(pipe.unet.config),
        vae_config=plain_config(pipe.vae.config),
    )
    return pipe, str(out)


def test_every_weight_lands_where_it_came_from(converted):
    from extern.zero123 import Zero123Pipeline

    original, out = converted
    for part in ("unet", "vae", "image_encoder", "cc_projection", "scheduler"):
        assert (Path(out) / part).is_dir(), part
    result = Zero123Pipeline.from_pretrained(out)
    for part in ("unet", "vae", "image_encoder", "cc_projection"):
        want = getattr(original, part).state_dict()
        got = getattr(result, part).state_dict()
        assert set(got) == set(want), part
        for key in want:
            torch.testing.assert_close(got[key], want[key], msg=f"{part}.{key}")
    scheduler = result.scheduler.config
    assert (scheduler.beta_start, scheduler.beta_end, scheduler.beta_schedule) == (
        0.00085,
        0.012,
        "scaled_linear",
    )


@pytest.mark.parametrize(
    "name, loss", [("zero123-unified-guidance", "loss_sd"), ("zero123-guidance", "loss_sds")]
)
def test_the_guidances_load_the_result(converted, tiny_zero123_path, name, loss):
    _, out = converted
    cond_image = f"{REPO}/load/images/sphere_rgba.png"
    rgb = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    camera = {
        "elevation": torch.tensor([20.0]),
        "azimuth": torch.tensor([45.0]),
        "camera_distances": torch.tensor([1.2]),
    }
    values = []
    for path in (out, tiny_zero123_path):
        guidance = threestudio.find(name)(
            {
                "pretrained_model_name_or_path": path,
                "cond_image_path": cond_image,
                "half_precision_weights": False,
            }
        )
        torch.manual_seed(1)
        values.append(guidance(rgb, **camera)[loss])
    assert values[0] > 0
    torch.testing.assert_close(values[0], values[1])


def test_help_says_what_it_converts():
    text = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for needle in (
        "105000.ckpt",
        "zero123-xl.ckpt",
        "stable_zero123.ckpt",
        "model.diffusion_model.",
        "first_stage_model.",
        "cc_projection",
        "--clip",
    ):
        assert needle in text, needle
