from threestudio.models.geometry import (  # noqa: F401
    base,
    implicit_sdf,
    implicit_volume,
    volume_grid,
)
