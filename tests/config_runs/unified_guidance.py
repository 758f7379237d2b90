"""The unified guidance's configs (experimental/unified-guidance/)."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS, SD_MODELS

_SMALL = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS

ROWS = {
    "experimental/unified-guidance/dreamfusion-sd": Row(models=SD_MODELS, overrides=_SMALL),
    "experimental/unified-guidance/hifa": Row(models=SD_MODELS, overrides=_SMALL),
}

# the published files at a CPU size (PUBLISHED_COPY_KEYS): every key that decides the method as
# published
PUBLISHED_COPIES = {
    name: Row(models=SD_MODELS, overrides=CAMERAS + HASH_GRID + NERF + PROMPTS, steps=1)
    for name in (
        "experimental/unified-guidance/dreamfusion-sd.yaml",
        "experimental/unified-guidance/hifa.yaml",
    )
}
