"""The bundled ProlificDreamer recipe (configs/bundled/prolificdreamer.yaml, the coarse VSD
stage): its model and LoRA branch are the config's own (load/tiny-shapes-sd), nothing to
substitute."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS

ROWS = {"bundled/prolificdreamer": Row(overrides=CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS)}
