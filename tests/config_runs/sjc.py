"""Score Jacobian Chaining (Stable Diffusion latents): the main recipe and the Gradio one."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, ISOSURFACE, NERF, PROMPTS, SD_MODELS

_GRID = ["system.geometry.grid_size=[16,16,16]"]
_SMALL = CAMERAS + NERF + PROMPTS + _GRID

# the Gradio recipe trains without checkpoints; the every-config run needs one to test from
_SAVE = ["checkpoint.save_last=true", "checkpoint.every_n_train_steps=2"]

ROWS = {
    # the published recipe keeps the default mesh-exporter (a mesh of the density grid)
    "sjc": Row(models=SD_MODELS, overrides=_SMALL + ISOSURFACE),
    # the Gradio recipe exports nothing (dummy-exporter)
    "gradio/sjc": Row(models=SD_MODELS, overrides=_SMALL + _SAVE, export=False),
}

# the published table as it is: a 100^3 grid, 64x64 renders, 512 samples per ray; two steps
# without validation or test views (one 512x512 view of the 100^3 grid at 512 samples per ray
# takes about 90 s on a CPU)
PUBLISHED_COPIES = {
    "sjc.yaml": Row(
        models=SD_MODELS,
        overrides=PROMPTS + ["trainer.val_check_interval=1000", "data.n_test_views=0"],
    ),
}
