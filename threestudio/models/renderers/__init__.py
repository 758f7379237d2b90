from threestudio.models.renderers import (  # noqa: F401
    base,
    gan_volume_renderer,
    nerf_volume_renderer,
    neus_volume_renderer,
    nvdiff_rasterizer,
    patch_renderer,
)
