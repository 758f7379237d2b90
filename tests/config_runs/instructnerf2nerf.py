"""Instruct-NeRF2NeRF (editing a scene of posed photographs; the multiview datamodule). The
established recipe fits the scene from scratch before it edits (no first stage to load)."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, PROMPTS

# InstructPix2Pix's UNet sees the image latent too (8 input channels); the prompt processor is
# the tiny SD text encoder of the same width
IP2P_MODELS = {
    "system.prompt_processor.pretrained_model_name_or_path": "sd",
    "system.guidance.pretrained_model_name_or_path": "ip2p",
}
# the shipped 64x64 cube scene; the LPIPS network with random weights (no weights offline)
_SCENE = ["data.dataroot=load/scenes/cube", "system.perceptual_loss.random_weights=true"]
# the patch renderer's wrapped NeRF renderer
_SAMPLES = ["system.renderer.base_renderer.num_samples_per_ray=32"]

ROWS = {
    # 16x16 training and evaluation views, two of them evaluated; edits from the first step on
    # (every step), so that InstructPix2Pix replaces a frame during the run
    "instructnerf2nerf": Row(
        models=IP2P_MODELS,
        overrides=_SCENE
        + _SAMPLES
        + HASH_GRID
        + PROMPTS
        + [
            "data.train_downsample_resolution=4",
            "data.eval_downsample_resolution=2",
            "data.eval_data_interval=6",
            "system.start_editing_step=0",
            "system.per_editing_step=1",
        ]
        + ISOSURFACE,
    ),
}

# the published table at a CPU size (PUBLISHED_COPY_KEYS): the published 2x / 4x downsampling
# of the 64x64 scene (32x32 training, 16x16 evaluation of all 12 frames); no edit happens in
# one step (they start after step 600), the fit of the photographs runs as published
PUBLISHED_COPIES = {
    "instructnerf2nerf.yaml": Row(
        models=IP2P_MODELS,
        overrides=_SCENE + _SAMPLES + HASH_GRID + PROMPTS + ISOSURFACE,
        steps=1,
    ),
}
