"""Score Distillation via Inversion."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS, SD_MODELS

ROWS = {
    "sdi": Row(models=SD_MODELS, overrides=CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS),
}

# no published copy: the published sdi.yaml renders 512x512 with 512 samples per ray and a full
# 16-level hash grid, and a copy may not override resolution (PUBLISHED_COPY_KEYS); one training
# step of it takes many minutes on a CPU. The row above runs the shipped file, which holds the
# published values (tests/test_published_configs.py checks them).
PUBLISHED_COPIES = {}
