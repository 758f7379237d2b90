from threestudio.systems import (  # noqa: F401
    base,
    dreamfusion,
    eff_dreamfusion,
    latentnerf,
    magic3d,
    reconstruction,
    sdi,
    sjc,
    textmesh,
)
