"""Score Distillation via Inversion."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS, SD_MODELS

ROWS = {
    "sdi": Row(models=SD_MODELS, overrides=CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS),
}

# the published file at a CPU size (PUBLISHED_COPY_KEYS): every key that decides the method as
# published
PUBLISHED_COPIES = {
    "sdi.yaml": Row(models=SD_MODELS, overrides=CAMERAS + HASH_GRID + NERF + PROMPTS, steps=1),
}
