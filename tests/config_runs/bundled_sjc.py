"""Score Jacobian Chaining with the bundled latent model."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, ISOSURFACE, NERF, PROMPTS

ROWS = {
    "bundled/sjc": Row(
        overrides=CAMERAS + NERF + PROMPTS + ISOSURFACE + ["system.geometry.grid_size=[16,16,16]"]
    ),
}
