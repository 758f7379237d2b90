"""The example conditioning images of the bundled world (``load/images/<name>_rgba.png`` with
their depth and normal maps), written by ``scripts/make_example_images.py``: which object each
shows and from which camera. The image-to-3D recipes of ``configs/bundled/`` and the novel-view
model's card and tests read them from here."""

import os

from threestudio.bundled.shapes import prompt_of
from threestudio.utils.paths import LOAD_DIR
from threestudio.utils.typing import Dict, Tuple

# name: (shape, colour, elevation, azimuth, distance, fovy): the reference camera of the
# published zero123 configs (elevation 0, azimuth 0, distance 3.8, fovy 20); the torus is seen
# from above so it is not a flat band, the cube and the cone from a little above so that their
# tops show; the cube from world azimuth 30 so that two of its faces show (face-on it shows one
# square, which is also a cylinder's side: Magic123 made a cylinder of it)
EXAMPLE_IMAGES: Dict[str, Tuple[str, str, float, float, float, float]] = {
    "sphere": ("sphere", "orange", 0.0, 0.0, 3.8, 20.0),
    "torus": ("torus", "blue", 30.0, 0.0, 3.8, 20.0),
    "cube": ("cube", "red", 30.0, 30.0, 3.8, 20.0),
    "cone": ("cone", "yellow", 15.0, 0.0, 3.8, 20.0),
}
# the light of every example: above and to the right of the camera
LIGHT_OFFSET_DEG = (30.0, 40.0)
LIGHT_DISTANCE = 6.0


def example_image_path(name: str, kind: str = "rgba") -> str:
    return os.path.join(LOAD_DIR, "images", f"{name}_{kind}.png")


def example_prompt(name: str) -> str:
    """The prompt of the example's object ("a orange sphere"), as the evaluation scores it."""
    shape, color = EXAMPLE_IMAGES[name][:2]
    return prompt_of(color, shape)
