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
    # the demo saves no checkpoints during training; launch.py still writes ckpts/last.ckpt
    "gradio/fantasia3d": Row(models=SD_MODELS, overrides=_GEOMETRY),
}

# the published tables at a CPU size (PUBLISHED_COPY_KEYS: resolution, hash grid, tet grid) and
# a short sphere fit (its run length); at the published size the geometry stage took 15 minutes
# and 3.8 GB on the 2 cores
_COPY = CAMERAS + HASH_GRID + _TETS + PROMPTS + ["system.geometry.shape_init_steps=200"]
PUBLISHED_COPIES = {
    "fantasia3d.yaml": Row(models=SD_MODELS, overrides=_COPY, steps=1),
    "fantasia3d-texture.yaml": Row(
        models=SD_MODELS,
        overrides=CAMERAS + HASH_GRID + _TETS + PROMPTS,
        after="fantasia3d",
        steps=1,
    ),
}
