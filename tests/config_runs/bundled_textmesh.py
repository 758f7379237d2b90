"""The bundled TextMesh recipe (configs/bundled/textmesh.yaml): its model is the config's own
(load/tiny-shapes), nothing to substitute."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, NERF, PROMPTS

# the SDF's zero level is the surface: --export marches a coarse grid at threshold 0
_SMALL = (
    CAMERAS
    + HASH_GRID
    + NERF
    + PROMPTS
    + ["system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64"]
)

ROWS = {"bundled/textmesh": Row(overrides=_SMALL)}
