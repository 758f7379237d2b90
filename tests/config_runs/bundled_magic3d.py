"""Magic3D with the bundled latent model: the coarse NeRF, then the refine stage from its
checkpoint."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS

_COARSE = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS
# a coarse tet grid; the hash grid as the coarse row's, whose texture field the refine inherits
_REFINE = (
    CAMERAS
    + HASH_GRID
    + PROMPTS
    + [
        "system.geometry.isosurface_resolution=32",
        "system.exporter.texture_size=64",
    ]
)

ROWS = {
    "bundled/magic3d-coarse": Row(overrides=_COARSE),
    "bundled/magic3d-refine": Row(overrides=_REFINE, after="bundled/magic3d-coarse"),
}
