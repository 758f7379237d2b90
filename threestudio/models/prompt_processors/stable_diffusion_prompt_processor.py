from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.prompt_processors.base import PromptProcessor, load_text_encoder
from threestudio.utils.typing import Float, List, Tensor, Union


@threestudio.register("stable-diffusion-prompt-processor")
class StableDiffusionPromptProcessor(PromptProcessor):
    """CLIP text embeddings (``last_hidden_state``, padded to the tokenizer's max length) from
    the ``tokenizer``/``text_encoder`` subfolders of a Stable Diffusion model."""

    @dataclass
    class Config(PromptProcessor.Config):
        pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"

    cfg: Config

    @staticmethod
    def encode_prompts(
        pretrained_model_name_or_path: str,
        prompts: List[str],
        device: Union[str, torch.device],
        **options,
    ) -> Float[Tensor, "B 77 Nf"]:
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer, text_encoder = load_text_encoder(
            CLIPTokenizer, CLIPTextModel, pretrained_model_name_or_path, device
        )
        tokens = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            embeddings = text_encoder(tokens.input_ids.to(device)).last_hidden_state
        del text_encoder
        return embeddings
