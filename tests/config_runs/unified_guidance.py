"""The unified guidance's configs (experimental/unified-guidance/)."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS, SD_MODELS

_SMALL = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS

ROWS = {
    "experimental/unified-guidance/dreamfusion-sd": Row(models=SD_MODELS, overrides=_SMALL),
    "experimental/unified-guidance/hifa": Row(models=SD_MODELS, overrides=_SMALL),
}

_VIEWS = ["data.n_val_views=1", "data.n_test_views=2"]

# the 64x64 published dreamfusion-sd runs as published (about 4 minutes on 2 busy cores: full
# hash grid, 512 samples per ray, 512x512 evaluation views); hifa.yaml renders 512x512 in
# training too and a copy may not override resolution (PUBLISHED_COPY_KEYS), so it has none
PUBLISHED_COPIES = {
    "experimental/unified-guidance/dreamfusion-sd.yaml": Row(models=SD_MODELS, overrides=_VIEWS),
}
