from threestudio.models.guidance import (  # noqa: F401
    controlnet_guidance,
    deep_floyd_guidance,
    instructpix2pix_guidance,
    stable_diffusion_guidance,
    stable_diffusion_sdi_guidance,
    stable_diffusion_unified_guidance,
    stable_diffusion_vsd_guidance,
    stable_zero123_guidance,
    zero123_guidance,
    zero123_unified_guidance,
)
