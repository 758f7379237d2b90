"""Image-conditioned DreamFusion (single-image and CO3D reference views; the refine stage)."""

from tests.config_runs import Row
from tests.config_runs.common import (
    CAMERAS,
    HASH_GRID,
    ISOSURFACE,
    NERF,
    PROMPTS,
    SD_MODELS,
    SINGLE_IMAGE,
)

_IMAGE = SINGLE_IMAGE
# co3d-datamodule: the example capture's views cropped and resized to 16x16 (its train_num_rays
# of 4096 then covers every pixel), random views as above
_CO3D = ["data.height=16", "data.width=16"] + _IMAGE[2:]
_FIELD = HASH_GRID + NERF + ISOSURFACE + PROMPTS
# the random views' SDS from the second step on (the published configs start it after 100 and
# 1000 reference-only steps), so that a 2-step run takes both paths
_BOTH_VIEWS = ["system.freq.ref_only_steps=0"]
# the refine stage's tet grid: a coarse one; its hash grid matches stage 1's, whose texture field
# it inherits
_TET_GRID = ["system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64"]

ROWS = {
    "experimental/imagecondition": Row(models=SD_MODELS, overrides=_IMAGE + _FIELD + _BOTH_VIEWS),
    "experimental/imagecondition_zero123nerf": Row(models=SD_MODELS, overrides=_IMAGE + _FIELD),
    "experimental/imagecondition_zero123nerf_refine": Row(
        models=SD_MODELS,
        overrides=CAMERAS + HASH_GRID + _TET_GRID + PROMPTS,
        after="experimental/imagecondition_zero123nerf",
    ),
    "experimental/co3d-imagecondition": Row(
        models=SD_MODELS, overrides=_CO3D + _FIELD + _BOTH_VIEWS
    ),
}

# the published tables at a CPU size (only keys PUBLISHED_COPY_KEYS allows); their image is the
# shipped sphere (the published hamburger is not shipped). The published co3d-imagecondition.yaml
# has no copy: its optimizer group geometry.network names no module of implicit-volume (the
# shipped file's deviation), so it stops at configure_optimizers as published, and its
# data.root_dir / data.train_views (a download and views 50, 100) are not among the keys a copy
# may set.
_SPHERE = ["data.image_path=./load/images/sphere_rgba.png"]
PUBLISHED_COPIES = {
    "experimental/imagecondition.yaml": Row(
        models=SD_MODELS, overrides=_SPHERE + _IMAGE + _FIELD, steps=1
    ),
    "experimental/imagecondition_zero123nerf.yaml": Row(
        models=SD_MODELS, overrides=_SPHERE + _IMAGE + _FIELD, steps=1
    ),
    "experimental/imagecondition_zero123nerf_refine.yaml": Row(
        models=SD_MODELS,
        overrides=CAMERAS + HASH_GRID + _TET_GRID + PROMPTS,
        after="experimental/imagecondition_zero123nerf",
        steps=1,
    ),
}
