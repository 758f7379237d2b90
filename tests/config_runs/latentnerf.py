"""Latent-NeRF and Sketch-Shape: the latent stages, their RGB refinements (which load the latent
stage's weights through ``system.weights``, as the published refine configs do) and the Gradio
demo's config."""

import os

from tests.config_runs import Row
from tests.config_runs.common import (
    CAMERAS,
    HASH_GRID,
    ISOSURFACE,
    NERF,
    PROMPTS,
    SD_MODELS,
)
from threestudio.utils.paths import LOAD_DIR

_SMALL = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS
# the runs' working folder is a temporary one: the shipped guide mesh by its absolute path
TEDDY = os.path.join(LOAD_DIR, "shapes", "teddy.obj")
GUIDE = [f"system.guide_shape={TEDDY}"]

ROWS = {
    "latentnerf": Row(models=SD_MODELS, overrides=_SMALL),
    "latentnerf-refine": Row(
        models=SD_MODELS, overrides=_SMALL, after="latentnerf", handover="system.weights"
    ),
    "sketchshape": Row(models=SD_MODELS, overrides=_SMALL + GUIDE),
    "sketchshape-refine": Row(
        models=SD_MODELS, overrides=_SMALL + GUIDE, after="sketchshape", handover="system.weights"
    ),
    # the demo saves no checkpoint and exports nothing (dummy-exporter): the row keeps the last
    # checkpoint so that --test can start from it
    "gradio/latentnerf": Row(
        models=SD_MODELS,
        overrides=CAMERAS + HASH_GRID + NERF + PROMPTS + ["checkpoint.save_last=true"],
        export=False,
    ),
}

# the published tables as they are (64x64 renders, 512 samples per ray, full hash grids, 512x512
# validation): only the prompt, the models, the run length, the view counts and Sketch-Shape's
# guide mesh are given. The refinement tables are not run this way: their system.weights must be
# a latent-stage checkpoint of the published (full-size) field, which the tiny stage rows are not.
_COPY = PROMPTS + ["data.n_val_views=1", "data.n_test_views=2"]
PUBLISHED_COPIES = {
    "latentnerf.yaml": Row(models=SD_MODELS, overrides=_COPY),
    "sketchshape.yaml": Row(models=SD_MODELS, overrides=_COPY + GUIDE),
}
