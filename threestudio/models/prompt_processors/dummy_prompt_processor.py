from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.prompt_processors.base import PromptProcessor, hash_prompt
from threestudio.utils.typing import Any, Dict, Float, List, Tensor, Union


@threestudio.register("dummy-prompt-processor")
class DummyPromptProcessor(PromptProcessor):
    """No model: each prompt gets a fixed pseudo-random embedding seeded by its hash, so equal
    prompts give equal embeddings and different prompts (e.g. views) different ones. For tests
    and systems that need no text encoder."""

    @dataclass
    class Config(PromptProcessor.Config):
        pretrained_model_name_or_path: str = "dummy"
        hidden_size: int = 768  # embedding size: [max_length, hidden_size] per prompt
        max_length: int = 77  # tokens per embedding
        use_cache: bool = False  # nothing worth caching: the embedding is seeded by the prompt
        spawn: bool = False  # no encoder memory to free: computed in place

    cfg: Config

    def encoder_options(self) -> Dict[str, Any]:
        return {"hidden_size": self.cfg.hidden_size, "max_length": self.cfg.max_length}

    @staticmethod
    def encode_prompts(
        pretrained_model_name_or_path: str,
        prompts: List[str],
        device: Union[str, torch.device],
        hidden_size: int = 768,
        max_length: int = 77,
    ) -> Float[Tensor, "B N Nf"]:
        rows = []
        for prompt in prompts:
            seed = int(hash_prompt(pretrained_model_name_or_path, prompt)[:15], 16)
            generator = torch.Generator().manual_seed(seed)
            rows.append(torch.randn(max_length, hidden_size, generator=generator))
        return torch.stack(rows).to(device)
