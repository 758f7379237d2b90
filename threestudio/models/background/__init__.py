from threestudio.models.background import (  # noqa: F401
    base,
    neural_environment_map_background,
    solid_color_background,
    textured_background,
)
