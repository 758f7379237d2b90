from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.prompt_processors.base import PromptProcessor, load_text_encoder
from threestudio.utils.typing import Float, List, Tensor, Union

IF_MAX_LENGTH = 77


@threestudio.register("deep-floyd-prompt-processor")
class DeepFloydPromptProcessor(PromptProcessor):
    """T5 encoder embeddings (77 tokens) from the ``tokenizer``/``text_encoder`` subfolders of a
    DeepFloyd IF model. The encoder runs in float16 on CUDA (T5-XXL needs ~10 GB that way) and
    float32 elsewhere; embeddings are stored in float32."""

    @dataclass
    class Config(PromptProcessor.Config):
        pretrained_model_name_or_path: str = "DeepFloyd/IF-I-XL-v1.0"

    cfg: Config

    @staticmethod
    def encode_prompts(
        pretrained_model_name_or_path: str,
        prompts: List[str],
        device: Union[str, torch.device],
        **options,
    ) -> Float[Tensor, "B 77 Nf"]:
        from transformers import T5EncoderModel, T5Tokenizer

        device = torch.device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        tokenizer, text_encoder = load_text_encoder(
            T5Tokenizer, T5EncoderModel, pretrained_model_name_or_path, device, dtype=dtype
        )
        tokens = tokenizer(
            prompts,
            padding="max_length",
            max_length=IF_MAX_LENGTH,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            # the mask keeps padding out of attention, as DeepFloyd IF was trained
            embeddings = text_encoder(
                tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)
            ).last_hidden_state
        del text_encoder
        return embeddings.float()
