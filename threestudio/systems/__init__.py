from threestudio.systems import (  # noqa: F401
    base,
    dreamfusion,
    eff_dreamfusion,
    fantasia3d,
    latentnerf,
    magic3d,
    prolificdreamer,
    reconstruction,
    sdi,
    sjc,
    textmesh,
    zero123,
)
