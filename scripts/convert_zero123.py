r"""Convert an original Zero-1-to-3 or Stable Zero123 checkpoint into the folder that
threestudio's Zero-1-to-3 guidances load (zero123-guidance, stable-zero123-guidance,
zero123-unified-guidance: pass the folder as system.guidance.pretrained_model_name_or_path).

    python scripts/convert_zero123.py --checkpoint load/zero123/zero123-xl.ckpt \
        --output load/zero123/zero123-xl-diffusers
    python scripts/convert_zero123.py --checkpoint load/zero123/stable_zero123.ckpt \
        --output load/zero123/stable-zero123-diffusers

Input: a latent-diffusion checkpoint (.ckpt, or .safetensors) of the Zero-1-to-3 architecture:
the original Zero-1-to-3 (105000.ckpt), Zero-1-to-3 XL (zero123-xl.ckpt) and Stable Zero123
(stable_zero123.ckpt) all have it. Its state dict (under "state_dict" or at the top) holds
  model.diffusion_model.*  the UNet (Stable Diffusion 1.x with 8 input channels: the noisy
                           latent and the conditioning image's latent) -> unet/
  first_stage_model.*      the KL VAE (f = 8)                            -> vae/
  cc_projection.{weight,bias}  the linear map [CLIP embedding, 4 camera numbers] -> the
                           cross-attention width (772 -> 768)            -> cc_projection/
  cond_stage_model.*       the frozen OpenAI CLIP ViT-L/14 image encoder: not read; the same
                           weights are taken from --clip                 -> image_encoder/
and a DDPM scheduler (scaled_linear, beta 0.00085 -> 0.012, 1000 steps) is written to
scheduler/. The UNet and VAE keys are mapped with diffusers' LDM converters (the non-EMA weights
where a checkpoint also holds EMA ones, as diffusers does by default).

Needs torch, diffusers and transformers, and the CLIP vision weights: --clip is a hub id (to
download once, online) or a local folder of CLIPVisionModelWithProjection. The public diffusers
ports (bennyguo/zero123-diffusers, bennyguo/zero123-xl-diffusers) need no conversion.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Zero-1-to-3 is Stable Diffusion 1.x with 8 input channels (noisy latent + image latent)
UNET_CONFIG = dict(
    sample_size=32,
    in_channels=8,
    out_channels=4,
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
)
VAE_CONFIG = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    scaling_factor=0.18215,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
)


def load_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt.get("state_dict", ckpt)


def convert(
    checkpoint: str,
    output: str,
    clip: str,
    half: bool = False,
    unet_config: Optional[dict] = None,
    vae_config: Optional[dict] = None,
) -> None:
    """Write the folder ``output`` from ``checkpoint``; ``unet_config``/``vae_config`` replace
    the published architectures (UNET_CONFIG, VAE_CONFIG), e.g. for a test's tiny model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPVisionModelWithProjection

    from extern.zero123 import CCProjection, Zero123Pipeline

    state_dict = load_state_dict(checkpoint)
    unet = UNet2DConditionModel(**(unet_config or UNET_CONFIG))
    unet.load_state_dict(convert_ldm_unet_checkpoint(dict(state_dict), unet.config))
    vae = AutoencoderKL(**(vae_config or VAE_CONFIG))
    vae.load_state_dict(convert_ldm_vae_checkpoint(state_dict, vae.config))
    weight = state_dict["cc_projection.weight"]
    cc_projection = CCProjection(in_channel=weight.shape[1], out_channel=weight.shape[0])
    cc_projection.projection.load_state_dict(
        {"weight": weight, "bias": state_dict["cc_projection.bias"]}
    )
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(clip)
    pipe = Zero123Pipeline(
        unet=unet,
        vae=vae,
        image_encoder=image_encoder,
        cc_projection=cc_projection,
        scheduler=DDPMScheduler(**SCHEDULER_CONFIG),
    )
    if half:
        pipe.to(dtype=torch.float16)
    pipe.save_pretrained(output)
    print(f"saved {output}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="original Zero-1-to-3 / Zero-1-to-3 XL / Stable Zero123 .ckpt (or .safetensors)",
    )
    parser.add_argument(
        "--output", required=True, help="folder to write (unet/ vae/ image_encoder/ ...)"
    )
    parser.add_argument(
        "--clip",
        default="openai/clip-vit-large-patch14",
        help="CLIP ViT-L/14 vision weights: hub id or local folder (default: %(default)s)",
    )
    parser.add_argument("--half", action="store_true", help="save fp16 weights")
    args = parser.parse_args()
    convert(args.checkpoint, args.output, args.clip, args.half)


if __name__ == "__main__":
    main()
