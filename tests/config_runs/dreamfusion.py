"""DreamFusion, HiFA (a DreamFusion-system recipe), the quickstart and the reconstruction demo."""

from tests.config_runs import Row
from tests.config_runs.common import (
    CAMERAS,
    HASH_GRID,
    IF_MODELS,
    ISOSURFACE,
    NERF,
    PROMPTS,
    SD_MODELS,
)

_SMALL = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS

ROWS = {
    "dreamfusion": Row(models=SD_MODELS, overrides=_SMALL),
    # with run-time shape checks of every jaxtyping signature on the way
    "dreamfusion-sd": Row(models=SD_MODELS, overrides=_SMALL, flags=["--typecheck"]),
    "dreamfusion-wonormal": Row(models=SD_MODELS, overrides=_SMALL),
    "dreamfusion-if": Row(models=IF_MODELS, overrides=_SMALL),
    "hifa": Row(models=SD_MODELS, overrides=_SMALL),
    # the web-demo recipes (exp_root_dir outputs-gradio is overridden like every other)
    "gradio/dreamfusion-sd": Row(models=SD_MODELS, overrides=_SMALL),
    "gradio/dreamfusion-if": Row(models=IF_MODELS, overrides=_SMALL),
    # the bundled model is the config's own: nothing to substitute
    "quickstart": Row(overrides=_SMALL),
    "reconstruct-spheres": Row(overrides=CAMERAS + HASH_GRID + ISOSURFACE + NERF),
}

PUBLISHED_COPIES = {
    "dreamfusion-sd.yaml": Row(models=SD_MODELS, overrides=_SMALL, steps=1),
    "hifa.yaml": Row(models=SD_MODELS, overrides=_SMALL, steps=1),
}
