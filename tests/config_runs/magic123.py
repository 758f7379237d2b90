"""Magic123: coarse NeRF then DMTet refine from its checkpoint, each with Stable Diffusion (2D
prior, ``sd``) and Zero-1-to-3 (3D prior, ``zero123``); plain and HiFA variants."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, NERF, PROMPTS, SD_MODELS
from tests.config_runs.zero123 import _IMAGE

MAGIC123_MODELS = {**SD_MODELS, "system.guidance_3d.pretrained_model_name_or_path": "zero123"}

_COARSE = _IMAGE + HASH_GRID + NERF + ISOSURFACE + PROMPTS
# stage 2: a 32^3 tet grid; its hash grid matches stage 1's, whose texture field it inherits
_REFINE = (
    _IMAGE
    + HASH_GRID
    + [
        "system.geometry.isosurface_resolution=32",
        "system.exporter.texture_size=64",
    ]
    + PROMPTS
)
# the published files leave the image to the user (???): the shipped sphere
_SPHERE = ["data.image_path=./load/images/sphere_rgba.png"]

ROWS = {}
PUBLISHED_COPIES = {}
for variant in ("magic123", "magic123-hifa"):
    coarse, refine = f"{variant}-coarse-sd", f"{variant}-refine-sd"
    ROWS[coarse] = Row(models=MAGIC123_MODELS, overrides=_COARSE)
    ROWS[refine] = Row(models=MAGIC123_MODELS, overrides=_REFINE, after=coarse)
    PUBLISHED_COPIES[f"{coarse}.yaml"] = Row(
        models=MAGIC123_MODELS, overrides=_SPHERE + _COARSE, steps=1
    )
    PUBLISHED_COPIES[f"{refine}.yaml"] = Row(
        models=MAGIC123_MODELS, overrides=_SPHERE + _REFINE, after=coarse, steps=1
    )
