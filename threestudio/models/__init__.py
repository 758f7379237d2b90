from threestudio.models import (  # noqa: F401
    background,
    exporters,
    geometry,
    guidance,
    materials,
    prompt_processors,
    renderers,
)
