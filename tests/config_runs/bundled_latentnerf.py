"""Latent-NeRF with the bundled latent model: the latent stage and its RGB refinement (which
loads the latent stage's weights through ``system.weights``)."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS

_SMALL = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS

ROWS = {
    "bundled/latentnerf": Row(overrides=_SMALL),
    "bundled/latentnerf-refine": Row(
        overrides=_SMALL, after="bundled/latentnerf", handover="system.weights"
    ),
}
