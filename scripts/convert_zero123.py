"""Convert an original Zero-1-to-3 / Stable Zero123 checkpoint into the folder format of
``extern.zero123.Zero123Pipeline`` (unet/ vae/ image_encoder/ cc_projection/ scheduler/).

    python scripts/convert_zero123.py --checkpoint load/zero123/stable_zero123.ckpt \
        --output load/zero123/stable-zero123-diffusers

The original checkpoints hold the latent-diffusion UNet (``model.diffusion_model.*``), the VAE
(``first_stage_model.*``) and ``cc_projection.*``; their image encoder is the frozen OpenAI
CLIP ViT-L/14, taken from ``--clip`` (a local folder or ``openai/clip-vit-large-patch14``).
"""

import argparse
import sys
from pathlib import Path

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


def convert(checkpoint: str, output: str, clip: str, half: bool = False) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPVisionModelWithProjection

    from extern.zero123 import CCProjection, Zero123Pipeline

    state_dict = load_state_dict(checkpoint)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    unet.load_state_dict(convert_ldm_unet_checkpoint(dict(state_dict), unet.config))
    vae = AutoencoderKL(**VAE_CONFIG)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="original .ckpt or .safetensors")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--clip", default="openai/clip-vit-large-patch14")
    parser.add_argument("--half", action="store_true", help="save fp16 weights")
    args = parser.parse_args()
    convert(args.checkpoint, args.output, args.clip, args.half)


if __name__ == "__main__":
    main()
