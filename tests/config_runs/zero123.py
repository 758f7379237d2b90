"""Zero-1-to-3 and Stable Zero123 (one image to a NeRF; the single-image datamodule)."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, NERF, SINGLE_IMAGE

ZERO123_MODELS = {"system.guidance.pretrained_model_name_or_path": "zero123"}

_IMAGE = SINGLE_IMAGE
_LISTS = [
    "data.height=[16,16,16]",
    "data.width=[16,16,16]",
    "data.random_camera.height=[16,16,16]",
    "data.random_camera.width=[16,16,16]",
    "data.random_camera.batch_size=[2,2,2]",
]
_FIELD = HASH_GRID + NERF + ISOSURFACE

ROWS = {
    # with the sphere's depth map, so that the published lambda_depth applies
    "zero123": Row(models=ZERO123_MODELS, overrides=_IMAGE + _FIELD + ["data.requires_depth=true"]),
    # also saves the guidance's denoising panels every step (the real tiny pipeline's path)
    "stable-zero123": Row(
        models=ZERO123_MODELS,
        overrides=_IMAGE
        + _LISTS
        + _FIELD
        + ["system.freq.guidance_eval=1"]
        # the relative depth and normal losses (their data.requires_* follow the weights)
        + ["system.loss.lambda_depth_rel=0.1", "system.loss.lambda_normal=0.1"],
    ),
}

# the published tables at a CPU size (only keys PUBLISHED_COPY_KEYS allows); their image is
# the shipped sphere (the published hamburger is not shipped)
_SPHERE = ["data.image_path=./load/images/sphere_rgba.png"]
PUBLISHED_COPIES = {
    "zero123.yaml": Row(models=ZERO123_MODELS, overrides=_SPHERE + _IMAGE + _FIELD, steps=1),
}

# stage 2 (DMTet): a 32^3 tet grid; its hash grid matches stage 1's, whose texture field it
# inherits
ROWS["zero123-geometry"] = Row(
    models=ZERO123_MODELS,
    overrides=_IMAGE + HASH_GRID + ["system.geometry.isosurface_resolution=32"],
    after="zero123",
)
PUBLISHED_COPIES["zero123-geometry.yaml"] = Row(
    models=ZERO123_MODELS,
    overrides=_SPHERE + _IMAGE + HASH_GRID + ["system.geometry.isosurface_resolution=32"],
    after="zero123",
    steps=1,
)

# Stable Zero123's published table: its sizes are lists for the resolution milestones, each
# overridden with a list of 16s (so that data.resolution_milestones still apply, as published)
PUBLISHED_COPIES["stable-zero123.yaml"] = Row(
    models=ZERO123_MODELS, overrides=_SPHERE + _IMAGE + _LISTS + _FIELD, steps=1
)
