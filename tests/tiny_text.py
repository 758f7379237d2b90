"""Builders of tiny, randomly initialised text encoders saved in the diffusers folder layout.

``make_tiny_clip_text(folder)`` and ``make_tiny_t5_text(folder)`` write ``folder/tokenizer`` and
``folder/text_encoder`` so that code loading ``from_pretrained(folder, subfolder=...)`` (the path
users hit with a real Stable Diffusion or DeepFloyd IF checkpoint) can be exercised offline in
well under a second.
"""

import string
from pathlib import Path

import torch

CLIP_MAX_LENGTH = 77
T5_MAX_LENGTH = 77

# characters the tiny tokenizers know; anything else maps to the unknown token
_ALPHABET = string.ascii_lowercase + string.digits + ",.!?'-:;()"
# a handful of merges so byte-pair encoding does real work on common English fragments
_CLIP_MERGES = ["t h", "th e</w>", "o f</w>", "a n", "an d</w>", "e r", "i n", "in g</w>", "o n"]


def _clip_vocab() -> dict:
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for ch in _ALPHABET:
        tokens += [ch, ch + "</w>"]
    for merge in _CLIP_MERGES:
        tokens.append(merge.replace(" ", ""))
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def _tiny_clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = _clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in _CLIP_MERGES])
    tokenizer.model_max_length = CLIP_MAX_LENGTH
    return tokenizer


def _tiny_clip_text_config(hidden_size: int) -> dict:
    vocab = _clip_vocab()
    return dict(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )


def make_tiny_clip_text(folder, hidden_size: int = 32, seed: int = 0) -> Path:
    """A CLIPTokenizer (character-level BPE with a few merges) and a 2-layer CLIPTextModel."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = _tiny_clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPTextConfig(**_tiny_clip_text_config(hidden_size))
    model = CLIPTextModel(config).eval()
    tokenizer.save_pretrained(folder / "tokenizer")
    model.save_pretrained(folder / "text_encoder")
    return folder


def make_tiny_t5_text(folder, d_model: int = 32, seed: int = 0) -> Path:
    """A T5Tokenizer (unigram vocabulary of characters and a few words) and a 2-layer
    T5EncoderModel."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    # T5 convention: 0 pad, 1 eos, 2 unk; "▁" marks the start of a word
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for word in ["a", "the", "of", "view", "front", "side", "back", "overhead", "hamburger"]:
        pieces.append(("▁" + word, -1.0))
    for ch in _ALPHABET:
        pieces.append((ch, -3.0))
        pieces.append(("▁" + ch, -3.5))
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = T5_MAX_LENGTH
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(pieces),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5EncoderModel(config).eval()
    tokenizer.save_pretrained(folder / "tokenizer")
    model.save_pretrained(folder / "text_encoder")
    return folder


def make_tiny_clip(folder, image_size: int = 32, seed: int = 0) -> Path:
    """A complete tiny ``CLIPModel`` (text and vision towers) with its tokenizer, both at the
    folder's root as on the hub (``openai/clip-vit-base-patch32`` layout)."""
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    tokenizer = _tiny_clip_tokenizer()
    torch.manual_seed(seed)
    text = _tiny_clip_text_config(32)
    vision = dict(
        image_size=image_size,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
