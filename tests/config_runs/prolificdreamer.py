"""ProlificDreamer: the coarse VSD stage (and its variants: HiFA, patch rendering, scene,
importance / NeuS / proposal sampling, the unified guidance), then the geometry stage from the
coarse checkpoint and the texture stage from the geometry stage's."""

from tests.config_runs import Row
from tests.config_runs.common import CAMERAS, HASH_GRID, ISOSURFACE, NERF, PROMPTS, SD_MODELS

# VSD's LoRA copy starts from the same tiny UNet (the memory lever of a shared base model)
VSD_MODELS = {**SD_MODELS, "system.guidance.pretrained_model_name_or_path_lora": "sd"}
UNIFIED_MODELS = {**SD_MODELS, "system.guidance.vsd_phi_model_name_or_path": "sd"}

_COARSE = CAMERAS + HASH_GRID + ISOSURFACE + NERF + PROMPTS
# patch-renderer: 8x8 full-resolution patches of the 16x16 view; the wrapped renderer's samples
_PATCH = [
    "system.renderer.patch_size=8",
    "system.renderer.base_renderer.num_samples_per_ray=32",
]
_IMPORTANCE = NERF + ["system.renderer.num_samples_per_ray_importance=16"]
_PROPOSAL = NERF + ["system.renderer.num_samples_per_ray_proposal=16"]
# the NeuS field: its coarse-to-fine hash grid starts at level 2 of the tiny 4; its surface is the
# SDF's zero level
_NEUS = (
    CAMERAS
    + HASH_GRID
    + PROMPTS
    + _IMPORTANCE
    + [
        "system.geometry.pos_encoding_config.start_level=2",
        "system.geometry.isosurface_resolution=32",
    ]
)
# the DMTet stages: a coarse tet grid (the texture stage's hash grid is tiny too)
TET_GRID = ["system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64"]
_MESH = CAMERAS + HASH_GRID + TET_GRID + PROMPTS

ROWS = {
    "prolificdreamer": Row(models=VSD_MODELS, overrides=_COARSE),
    "prolificdreamer-hifa": Row(models=VSD_MODELS, overrides=_COARSE),
    "prolificdreamer-patch": Row(
        models=VSD_MODELS, overrides=CAMERAS + HASH_GRID + ISOSURFACE + PROMPTS + _PATCH
    ),
    "prolificdreamer-scene": Row(models=VSD_MODELS, overrides=_COARSE),
    "prolificdreamer-scene-hifa": Row(models=VSD_MODELS, overrides=_COARSE),
    "prolificdreamer-geometry": Row(models=SD_MODELS, overrides=_MESH, after="prolificdreamer"),
    "prolificdreamer-texture": Row(
        models=VSD_MODELS, overrides=_MESH, after="prolificdreamer-geometry"
    ),
    "experimental/prolificdreamer-importance": Row(
        models=VSD_MODELS, overrides=CAMERAS + HASH_GRID + ISOSURFACE + PROMPTS + _IMPORTANCE
    ),
    "experimental/prolificdreamer-neus-importance": Row(models=VSD_MODELS, overrides=_NEUS),
    "experimental/prolificdreamer-propnet": Row(
        models=VSD_MODELS, overrides=CAMERAS + HASH_GRID + ISOSURFACE + PROMPTS + _PROPOSAL
    ),
    "experimental/unified-guidance/prolificdreamer": Row(models=UNIFIED_MODELS, overrides=_COARSE),
    "experimental/unified-guidance/prolificdreamer-hifa": Row(
        models=UNIFIED_MODELS, overrides=_COARSE
    ),
}

# the three stages' published tables at a CPU size (PUBLISHED_COPY_KEYS): the texture copy
# starts from the geometry row's checkpoint, the geometry copy from the coarse row's
PUBLISHED_COPIES = {
    "prolificdreamer.yaml": Row(models=VSD_MODELS, overrides=_COARSE, steps=1),
    "prolificdreamer-geometry.yaml": Row(
        models=SD_MODELS, overrides=_MESH, after="prolificdreamer", steps=1
    ),
    "prolificdreamer-texture.yaml": Row(
        models=VSD_MODELS, overrides=_MESH, after="prolificdreamer-geometry", steps=1
    ),
}
