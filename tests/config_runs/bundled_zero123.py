"""The bundled image-to-3D recipes (configs/bundled/): Zero-1-to-3 with the bundled novel-view
model, Magic123 with it and the bundled latent model (the configs' own: nothing to
substitute)."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, NERF, SINGLE_IMAGE

_SMALL = SINGLE_IMAGE + HASH_GRID + ISOSURFACE + NERF

ROWS = {
    "bundled/zero123": Row(overrides=_SMALL),
    "bundled/magic123-coarse": Row(overrides=_SMALL),
}
