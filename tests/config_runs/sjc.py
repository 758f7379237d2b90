"""Score Jacobian Chaining (Stable Diffusion latents): the main recipe and the Gradio one."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, ISOSURFACE, NERF, PROMPTS, SD_MODELS

_SMALL = CAMERAS + NERF + PROMPTS
_GRID = ["system.geometry.grid_size=[16,16,16]"]


ROWS = {
    # the published recipe keeps the default mesh-exporter (a mesh of the density grid)
    "sjc": Row(models=SD_MODELS, overrides=_SMALL + _GRID + ISOSURFACE),
    # the Gradio recipe exports nothing (dummy-exporter)
    "gradio/sjc": Row(models=SD_MODELS, overrides=_SMALL + _GRID, export=False),
}

# the published table at a CPU size (only keys PUBLISHED_COPY_KEYS allows: the 100^3 grid
# stays)
PUBLISHED_COPIES = {
    "sjc.yaml": Row(models=SD_MODELS, overrides=_SMALL, steps=1),
}
