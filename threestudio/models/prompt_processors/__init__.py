from threestudio.models.prompt_processors import (  # noqa: F401
    base,
    deepfloyd_prompt_processor,
    dummy_prompt_processor,
    stable_diffusion_prompt_processor,
    zero123_prompt_processor,
)
