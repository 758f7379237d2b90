from dataclasses import dataclass

import threestudio
from threestudio.models.prompt_processors.dummy_prompt_processor import DummyPromptProcessor


@threestudio.register("zero123-prompt-processor")
class Zero123PromptProcessor(DummyPromptProcessor):
    """The name the first Zero-1-to-3 config uses: Zero-1-to-3 is conditioned on an image, not a
    text, so its prompt is unused and this is the model-free dummy prompt processor."""

    @dataclass
    class Config(DummyPromptProcessor.Config):
        pass

    cfg: Config
