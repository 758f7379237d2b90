"""Override sets shared by the rows: each makes one kind of module tiny for a CPU run."""

# random-camera-datamodule (and the datamodules built on it): 16x16 renders, one validation view
# (validation runs once, at the last step), two test views (a two-frame video)
CAMERAS = [
    "data.width=16",
    "data.height=16",
    "data.eval_width=16",
    "data.eval_height=16",
    "data.n_val_views=1",
    "data.n_test_views=2",
]

# a hash-grid field (implicit-volume, implicit-sdf, tetrahedra-sdf-grid's texture field)
HASH_GRID = [
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
]

# marching on a coarse grid for --export (and for mesh-based renderers)
ISOSURFACE = [
    "system.geometry.isosurface_resolution=32",
    "system.geometry.isosurface_threshold=auto",
    "system.exporter.texture_size=64",
]

NERF = ["system.renderer.num_samples_per_ray=32"]

# text embeddings in-process (a subprocess per prompt costs more than the tiny encoder)
PROMPTS = ["system.prompt_processor.spawn=false"]

SD_MODELS = {
    "system.prompt_processor.pretrained_model_name_or_path": "sd",
    "system.guidance.pretrained_model_name_or_path": "sd",
}
IF_MODELS = {
    "system.prompt_processor.pretrained_model_name_or_path": "if",
    "system.guidance.pretrained_model_name_or_path": "if",
}

# single-image-datamodule (and the image datamodules built on it): a 16x16 reference view, two
# 16x16 random views per step, one validation view and two test views
SINGLE_IMAGE = [
    "data.height=16",
    "data.width=16",
    "data.random_camera.height=16",
    "data.random_camera.width=16",
    "data.random_camera.eval_height=16",
    "data.random_camera.eval_width=16",
    "data.random_camera.batch_size=2",
    "data.random_camera.n_val_views=1",
    "data.random_camera.n_test_views=2",
]
