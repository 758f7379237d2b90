"""Zero-1-to-3 guidance alone (zero123-simple-system with zero123-unified-guidance)."""

from tests.config_runs import Row
from tests.config_runs.common import HASH_GRID, ISOSURFACE, NERF, SINGLE_IMAGE
from tests.config_runs.zero123 import ZERO123_MODELS

# single-image-datamodule at 16x16: the published one novel view per step, one validation view
# and two test views; the conditioning image is the shipped sphere (the published file leaves
# data.image_path to the user)
_SIZES = ["data.image_path=./load/images/sphere_rgba.png"] + [
    o for o in SINGLE_IMAGE if not o.startswith("data.random_camera.batch_size")
]

ROWS = {
    "experimental/unified-guidance/zero123-simple": Row(
        models=ZERO123_MODELS, overrides=_SIZES + HASH_GRID + NERF + ISOSURFACE
    ),
}

# the published table at a CPU size (only keys PUBLISHED_COPY_KEYS allows)
PUBLISHED_COPIES = {
    "experimental/unified-guidance/zero123-simple.yaml": Row(
        models=ZERO123_MODELS, overrides=_SIZES + HASH_GRID + NERF, steps=1
    ),
}
