"""Fantasia3D: the geometry stage (implicit-sdf DMTet, normal-map SDS), the appearance stage
(tetrahedra-sdf-grid + pbr-material, from the geometry stage's checkpoint) and the Gradio demo's
geometry stage."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, PROMPTS, SD_MODELS

# marching tetrahedra on a coarse grid; an SDF's surface is its zero level (no "auto" threshold)
_TETS = ["system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64"]
# a short, fast fit of the sphere prior (the published fit is 1000 steps of 10k points)
_SHAPE_INIT = [
    "system.geometry.shape_init_steps=30",
    "system.geometry.shape_init_batch_size=2000",
    "system.geometry.shape_init_lr=0.01",
]
# step 0 feeds the normal map + silhouette as a latent, step 1 the normal map as an image
_BOTH_INPUTS = ["system.latent_steps=1"]

_GEOMETRY = CAMERAS + HASH_GRID + _TETS + _SHAPE_INIT + _BOTH_INPUTS + PROMPTS

ROWS = {
    "fantasia3d": Row(models=SD_MODELS, overrides=_GEOMETRY),
    "fantasia3d-texture": Row(
        models=SD_MODELS, overrides=CAMERAS + HASH_GRID + _TETS + PROMPTS, after="fantasia3d"
    ),
    # the demo saves no checkpoints: the row saves the last one for --test and --export to read
    "gradio/fantasia3d": Row(
        models=SD_MODELS,
        overrides=_GEOMETRY
        + ["checkpoint.save_last=true", "checkpoint.every_n_train_steps=${trainer.max_steps}"],
    ),
}

# the published tables as they are (512x512 renders, 128^3 tet grids, the 1000-step sphere fit
# of 10k points); only the evaluation view counts are cut. Measured on a loaded 2-core machine:
# geometry 161 s CPU (15 min wall, 3.8 GB), texture after the tiny geometry row 94 s CPU (2 GB)
_FEW_VIEWS = ["data.n_val_views=1", "data.n_test_views=2"]
PUBLISHED_COPIES = {
    "fantasia3d.yaml": Row(models=SD_MODELS, overrides=PROMPTS + _FEW_VIEWS),
    "fantasia3d-texture.yaml": Row(
        models=SD_MODELS, overrides=PROMPTS + _FEW_VIEWS, after="fantasia3d"
    ),
}
