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
    # the demo saves no checkpoints during training (launch.py still writes ckpts/last.ckpt) and
    # exports nothing (dummy-exporter)
    "gradio/latentnerf": Row(
        models=SD_MODELS, overrides=CAMERAS + HASH_GRID + NERF + PROMPTS, export=False
    ),
}

# published copies at a CPU size (the keys PUBLISHED_COPY_KEYS allows, Sketch-Shape's guide mesh
# among them); the refinements load their stage rows' weights, whose hash grids the same size
# overrides make match.
PUBLISHED_COPIES = {
    "latentnerf.yaml": Row(models=SD_MODELS, overrides=_SMALL, steps=1),
    "latentnerf-refine.yaml": Row(
        models=SD_MODELS, overrides=_SMALL, after="latentnerf", handover="system.weights", steps=1
    ),
    "sketchshape.yaml": Row(models=SD_MODELS, overrides=_SMALL + GUIDE, steps=1),
    "sketchshape-refine.yaml": Row(
        models=SD_MODELS,
        overrides=_SMALL + GUIDE,
        after="sketchshape",
        handover="system.weights",
        steps=1,
    ),
}
