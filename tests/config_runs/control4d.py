"""Control4D, static scenes (the multiview datamodule's shipped cube scene; a GAN renderer)."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, PROMPTS

# the prompt processor needs the tiny text encoder (sd); the guidance the tiny SD folder with a
# ControlNet beside it, and that ControlNet's own folder
MODELS = {
    "system.prompt_processor.pretrained_model_name_or_path": "sd",
    "system.guidance.pretrained_model_name_or_path": "controlnet",
}
CONTROLNET = {"system.guidance.controlnet_name_or_path": "controlnet-model"}

# the cube scene is 64x64: training views 32x32 (the published train_downsample_resolution 2;
# the discriminator needs at least 24 pixels), evaluation views 16x16; 32 samples per ray; LPIPS
# with random weights (none offline)
_SIZE = HASH_GRID + ISOSURFACE + PROMPTS
_SIZE += [
    "system.renderer.base_renderer.num_samples_per_ray=32",
    "system.perceptual_loss.random_weights=true",
]

ROWS = {
    # edits from the first step on, every step (canny edges: the normal estimator needs
    # controlnet_aux), two evaluation views; 4 optimiser steps are 2 batches
    "control4d-static": Row(
        models={**MODELS, **CONTROLNET},
        overrides=_SIZE
        + [
            "data.eval_data_interval=6",
            "system.guidance.control_type=canny",
            "system.start_editing_step=0",
            "system.per_editing_step=1",
            # Lightning counts both optimiser steps of a batch: 4 steps are 2 batches, and
            # validation (every n batches) runs after the second, at step 4
            "trainer.val_check_interval=2",
        ],
        steps=4,
    ),
}

# the published file at a CPU size: its example scene, all 12 views evaluated; no edit within
# the run (editing starts after step 2000), so the ControlNet is never loaded
PUBLISHED_COPIES = {
    "control4d-static.yaml": Row(
        models=MODELS,
        # one batch (two optimiser steps), validated after it
        overrides=["data.dataroot=load/scenes/cube"] + _SIZE + ["trainer.val_check_interval=1"],
        steps=2,
    ),
}
