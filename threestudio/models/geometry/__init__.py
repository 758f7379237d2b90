from threestudio.models.geometry import (  # noqa: F401
    base,
    custom_mesh,
    implicit_sdf,
    implicit_volume,
    tetrahedra_sdf_grid,
    volume_grid,
)
