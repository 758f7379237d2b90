"""Magic3D (coarse NeRF, then the refine stage from its checkpoint) and efficient DreamFusion."""

from tests.config_runs import Row
from tests.config_runs.common import (
    CAMERAS,
    HASH_GRID,
    IF_MODELS,
    ISOSURFACE,
    NERF,
    PROMPTS,
    SD_MODELS,
)

_COARSE = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS
# the refine stage's tet grid: a coarse one; its hash grid must match the coarse stage's, whose
# texture field it inherits
TET_GRID = ["system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64"]
_REFINE = CAMERAS + HASH_GRID + TET_GRID + PROMPTS
# the eff datamodule renders a sub-lattice of the 16x16 image
EFF_SAMPLES = ["data.sample_width=8", "data.sample_height=8"]

ROWS = {
    "magic3d-coarse-sd": Row(models=SD_MODELS, overrides=_COARSE),
    "magic3d-coarse-if": Row(models=IF_MODELS, overrides=_COARSE),
    "magic3d-refine-sd": Row(models=SD_MODELS, overrides=_REFINE, after="magic3d-coarse-sd"),
    "dreamfusion-sd-eff": Row(models=SD_MODELS, overrides=_COARSE + EFF_SAMPLES),
}

# published copies at a CPU size (the keys PUBLISHED_COPY_KEYS allows); the eff copy keeps its
# published 128x128 image and 64x64 rays (data.sample_* is not among those keys)
_EFF_COPY = [o for o in CAMERAS if not o.startswith(("data.width", "data.height"))]

PUBLISHED_COPIES = {
    "magic3d-coarse-sd.yaml": Row(models=SD_MODELS, overrides=_COARSE, steps=1),
    "magic3d-coarse-if.yaml": Row(models=IF_MODELS, overrides=_COARSE, steps=1),
    "magic3d-refine-sd.yaml": Row(
        models=SD_MODELS, overrides=_REFINE, after="magic3d-coarse-sd", steps=1
    ),
    "dreamfusion-sd-eff.yaml": Row(
        models=SD_MODELS,
        overrides=_EFF_COPY + HASH_GRID + ISOSURFACE + NERF + PROMPTS,
        steps=1,
    ),
}
