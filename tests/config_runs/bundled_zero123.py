"""The bundled image-to-3D recipes (configs/bundled/): Zero-1-to-3 with the bundled novel-view
model (the config's own: nothing to substitute)."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, NERF, SINGLE_IMAGE

_SMALL = SINGLE_IMAGE + HASH_GRID + ISOSURFACE + NERF

ROWS = {
    "bundled/zero123": Row(overrides=_SMALL),
}
