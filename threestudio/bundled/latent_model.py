"""The recipe of the bundled latent text-to-image model (``load/tiny-shapes-sd``): a Stable-
Diffusion-style pipeline for the world of ``threestudio.bundled.shapes``.

Its parts are the real classes of a Stable Diffusion folder: ``CLIPTokenizer`` (a byte-pair
vocabulary of the world's words), ``CLIPTextModel``, ``AutoencoderKL`` (f = 2: 32x32 images,
16x16x4 latents), ``UNet2DConditionModel`` on the latents and a ``DDPMScheduler`` with Stable
Diffusion's scaled-linear betas, saved by ``StableDiffusionPipeline.save_pretrained``. So every
Stable-Diffusion-based guidance and prompt processor (SDS, SJC, VSD and its LoRA branch,
Latent-NeRF's latent renders, Fantasia3D's normal latents) loads it through
``pretrained_model_name_or_path: load/tiny-shapes-sd`` as it loads
``stabilityai/stable-diffusion-2-1-base``. ``scripts/train_latent_model.py`` trains it.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from threestudio.bundled.shapes import ShapeDataset, known_words
from threestudio.bundled.tiny_model import caption_table, fit_text_to_image
from threestudio.models.prompt_processors.base import VOCABULARY_FILE
from threestudio.utils.paths import LOAD_DIR
from threestudio.utils.typing import Callable, Float, List, Optional, Tensor, Tuple

LATENT_MODEL_PATH = os.path.join(LOAD_DIR, "tiny-shapes-sd")
CLIP_MAX_LENGTH = 77  # as Stable Diffusion's tokenizer pads


# ============ the pipeline's parts ============


def build_clip_tokenizer():
    """A CLIP byte-pair tokenizer whose merges spell each word of the bundled world as one
    token; any other word falls back to its letters (CLIP's byte alphabet is all there)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges: List[Tuple[str, str]] = []
    for word in known_words() + [","]:
        # merge as byte-pair encoding would with the merges so far; where the word is still in
        # pieces, join its first two (so no earlier word's merges split a later one)
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            ranks = {pair: r for r, pair in enumerate(merges)}
            pairs = [(ranks.get(p, math.inf), i) for i, p in enumerate(zip(pieces, pieces[1:]))]
            rank, i = min(pairs)
            if rank == math.inf:
                i = 0
                merges.append((pieces[0], pieces[1]))
                if pieces[0] + pieces[1] not in vocab:
                    vocab.append(pieces[0] + pieces[1])
            pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        merges=merges,
        pad_token="<|endoftext|>",
    )
    tokenizer.model_max_length = CLIP_MAX_LENGTH
    return tokenizer


def build_clip_text_encoder(tokenizer, hidden_size: int = 64):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae(image_size: int = 32):
    """A KL autoencoder with one downsampling (f = 2): 32x32x3 images <-> 16x16x4 latents."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=image_size,
    )


def build_latent_unet(
    sample_size: int = 16,
    in_channels: int = 4,
    cross_attention_dim: int = 64,
    block_out_channels: Tuple[int, ...] = (64, 96, 96),
):
    """Convolutions at 16 px, cross-attention at 8 and 4 px and in the middle (Stable
    Diffusion's layout, smaller). ``in_channels`` 8 is the novel-view model's (latent +
    conditioning image latent)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=16,
        norm_num_groups=16,
    )


def build_sd_scheduler():
    """Stable Diffusion's training schedule: scaled-linear betas 0.00085 -> 0.012, epsilon."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def tokenize_clip(tokenizer, prompts: List[str]) -> Tensor:
    """Exactly as ``stable-diffusion-prompt-processor`` tokenizes (no attention mask)."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def save_sd_pipeline(folder: str, tokenizer, text_encoder, vae, unet, scheduler) -> None:
    """A ``StableDiffusionPipeline`` folder (no safety checker) plus ``vocabulary.json``."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    with open(os.path.join(folder, VOCABULARY_FILE), "w") as f:
        json.dump({"words": known_words()}, f, indent=1)


# ============ the autoencoder ============


def train_vae(
    data: ShapeDataset,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-5,
    seed: int = 0,
    progress: bool = True,
) -> Tuple[nn.Module, List[float]]:
    """Trains the autoencoder on ``data`` (L1 + L2 reconstruction, a small KL term) and sets
    its ``scaling_factor`` to 1 / std of the latents, as Stable Diffusion's 0.18215 was set."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vae = build_vae(data.images.shape[1])
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * (0.5 * (1 + math.cos(math.pi * s / steps)))
    )
    history: List[float] = []
    vae.train()
    bar = tqdm(range(steps), desc="training autoencoder", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x = data.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        rec = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        loss = rec + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(rec.item())
        if step % 50 == 0:
            bar.set_postfix(rec=f"{sum(history[-50:]) / len(history[-50:]):.4f}")
    vae.eval()
    mean, _ = encode_dataset(vae, data, limit=2048)
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    return vae, history


@torch.no_grad()
def encode_dataset(
    vae, data: ShapeDataset, limit: Optional[int] = None, batch_size: int = 256
) -> Tuple[Float[Tensor, "N 4 h w"], Float[Tensor, "N 4 h w"]]:
    """The posterior mean and std of each image (unscaled latents)."""
    n = len(data) if limit is None else min(limit, len(data))
    means, stds = [], []
    for i in tqdm(range(0, n, batch_size), desc="encoding", leave=False):
        x = data.images[i : min(n, i + batch_size)].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        posterior = vae.encode(x).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_error(vae, data: ShapeDataset) -> float:
    """Mean absolute error (in [0, 1] units) of decoding the posterior means of ``data``."""
    mean, _ = encode_dataset(vae, data)
    errors = []
    for i in range(0, len(data), 256):
        recon = vae.decode(mean[i : i + 256]).sample
        x = data.images[i : i + 256].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        errors.append((recon.clamp(-1, 1) - x).abs().mean(dim=(1, 2, 3)) / 2)
    return torch.cat(errors).mean().item()


# ============ the latent diffusion model ============


def train_latent_diffusion(
    data: ShapeDataset,
    vae,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
    log: Optional[Callable[[int, float], None]] = None,
):
    """Trains the CLIP text encoder and the latent UNet jointly on ``data`` encoded by the
    (frozen) ``vae``; returns (tokenizer, EMA text encoder, EMA UNet, scheduler, history)."""
    mean, std = encode_dataset(vae, data)
    scale = vae.config.scaling_factor
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer()
    text_encoder = build_clip_text_encoder(tokenizer)
    unet = build_latent_unet(sample_size=mean.shape[-1])
    scheduler = build_sd_scheduler()
    input_ids = tokenize_clip(tokenizer, caption_table()[0])

    def encode(rows: Tensor, encoder: nn.Module) -> Tensor:
        return encoder(input_ids[rows]).last_hidden_state

    def latents(idx: Tensor, gen: torch.Generator) -> Tensor:
        return (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale

    ema_text, ema_unet, history = fit_text_to_image(
        data, latents, encode, text_encoder, unet, scheduler, steps, batch_size, lr, seed,
        progress=progress, log=log, desc="training latent diffusion model",
    )  # fmt: skip
    return tokenizer, ema_text, ema_unet, scheduler, history


@torch.no_grad()
def encode_clip_prompts(tokenizer, text_encoder, prompts: List[str]) -> Float[Tensor, "B 77 D"]:
    return text_encoder(tokenize_clip(tokenizer, prompts)).last_hidden_state


@torch.no_grad()
def sample_latent_images(
    unet,
    vae,
    scheduler,
    cond: Float[Tensor, "B 77 D"],
    uncond: Float[Tensor, "1 77 D"],
    guidance_scale: float = 5.0,
    steps: int = 50,
    seed: int = 0,
) -> Float[Tensor, "B H W 3"]:
    """Ancestral (DDPM) samples decoded to [0, 1], with classifier-free guidance."""
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(scheduler.config)
    ddpm.set_timesteps(steps)
    size = unet.config.sample_size
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(cond.shape[0], unet.config.out_channels, size, size, generator=gen)
    emb = torch.cat([cond, uncond.expand_as(cond)])
    for t in ddpm.timesteps:
        pred = unet(torch.cat([z, z]), t, encoder_hidden_states=emb).sample
        c, u = pred.chunk(2)
        z = ddpm.step(u + guidance_scale * (c - u), t, z, generator=gen).prev_sample
    image = vae.decode(z / vae.config.scaling_factor).sample
    return (F.interpolate(image, size=image.shape[-2:]).permute(0, 2, 3, 1) * 0.5 + 0.5).clamp(
        0.0, 1.0
    )
