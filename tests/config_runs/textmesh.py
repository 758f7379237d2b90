"""TextMesh (coarse stage, DeepFloyd IF): the main recipe and the Gradio one."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, IF_MODELS, NERF, PROMPTS

# the SDF's zero level is the surface: --export marches a coarse grid at threshold 0
_SMALL = CAMERAS + HASH_GRID + NERF + PROMPTS + ["system.geometry.isosurface_resolution=32"]


ROWS = {
    "textmesh-if": Row(models=IF_MODELS, overrides=_SMALL),
    "gradio/textmesh-if": Row(models=IF_MODELS, overrides=_SMALL),
}

# the published table at a CPU size (only keys PUBLISHED_COPY_KEYS allows)
PUBLISHED_COPIES = {
    "textmesh-if.yaml": Row(models=IF_MODELS, overrides=_SMALL, steps=1),
}
