"""The bundled Fantasia3D recipes (configs/bundled/fantasia3d*.yaml): the geometry stage, then
the texture stage from its checkpoint. Their model is the configs' own (load/tiny-shapes-sd),
nothing to substitute."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, PROMPTS
from tests.config_runs.fantasia3d import _BOTH_INPUTS, _SHAPE_INIT, _TETS

ROWS = {
    "bundled/fantasia3d": Row(
        overrides=CAMERAS + HASH_GRID + _TETS + _SHAPE_INIT + _BOTH_INPUTS + PROMPTS
    ),
    "bundled/fantasia3d-texture": Row(
        overrides=CAMERAS + HASH_GRID + _TETS + PROMPTS, after="bundled/fantasia3d"
    ),
}
