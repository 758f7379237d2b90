from threestudio.models.materials import (  # noqa: F401
    base,
    diffuse_with_point_light_material,
    hybrid_rgb_latent_material,
    neural_radiance_material,
    no_material,
    pbr_material,
    sd_latent_adapter_material,
)
