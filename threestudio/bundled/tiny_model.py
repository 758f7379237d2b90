"""The recipe of the bundled tiny text-to-image model (``load/tiny-shapes``): its parts, training
and sampling.

The model is a DeepFloyd-IF-style pixel-space pipeline at 32x32 built from the real classes
(``T5Tokenizer``, ``T5EncoderModel``, ``UNet2DConditionModel``, ``DDPMScheduler``) and saved with
``IFPipeline.save_pretrained``, so ``deep-floyd-guidance`` and ``deep-floyd-prompt-processor``
load it unchanged through ``pretrained_model_name_or_path``. It is trained from scratch on the
synthetic world of ``threestudio.bundled.shapes`` by ``scripts/train_tiny_model.py``, which also
trains the world's classifier (``threestudio.bundled.classifier``) into ``classifier/`` beside it.
"""

import copy
import json
import math
import os

import torch
import torch.nn as nn
from tqdm import tqdm

from threestudio.bundled.shapes import COLORS, DIRECTIONS, SHAPES, ShapeDataset, known_words
from threestudio.models.prompt_processors.base import VOCABULARY_FILE
from threestudio.models.prompt_processors.deepfloyd_prompt_processor import IF_MAX_LENGTH
from threestudio.utils.paths import LOAD_DIR
from threestudio.utils.typing import Callable, Dict, Float, List, Optional, Tensor, Tuple

BUNDLED_MODEL_PATH = os.path.join(LOAD_DIR, "tiny-shapes")


# ============ the pipeline's parts ============


def build_tokenizer():
    """A T5 (unigram) tokenizer whose pieces are the words of the bundled world; any other word
    becomes ``<unk>``."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -5.0), (",", -1.0)]
    pieces += [("▁" + w, -1.0) for w in known_words()]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = IF_MAX_LENGTH
    return tokenizer


def build_text_encoder(vocab_size: int, d_model: int = 64):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=16,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def build_unet(
    sample_size: int = 32,
    cross_attention_dim: int = 64,
    block_out_channels: Tuple[int, ...] = (32, 64, 96),
):
    """Convolutions at 32 and 16 px, cross-attention at 8 px and in the middle; the pooled text
    also enters every block through the time embedding (IF's ``addition_embed_type="text"``)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=16,
        norm_num_groups=16,
        addition_embed_type="text",
    )


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="fixed_small",
        prediction_type="epsilon",
        clip_sample=True,
    )


def tokenize(tokenizer, prompts: List[str]) -> Dict[str, Tensor]:
    """Exactly as ``deep-floyd-prompt-processor`` tokenizes."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=IF_MAX_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )


def save_pipeline(folder: str, tokenizer, text_encoder, unet, scheduler) -> None:
    """An ``IFPipeline`` folder (no safety checker or watermarker) plus ``vocabulary.json``."""
    from diffusers import IFPipeline

    pipe = IFPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    with open(os.path.join(folder, VOCABULARY_FILE), "w") as f:
        json.dump({"words": known_words()}, f, indent=1)


# ============ captions ============


def caption_table() -> Tuple[List[str], Callable[[int, int, int], int]]:
    """All captions (empty, plain prompts, view-dependent prompts) and a function
    (color, shape, direction or -1 for plain) -> caption index; index 0 is the empty caption."""
    colors = list(COLORS)
    captions = [""]
    index = {}
    for ci, c in enumerate(colors):
        for si, s in enumerate(SHAPES):
            prompt = f"a {c} {s}"
            index[(ci, si, -1)] = len(captions)
            captions.append(prompt)
            for di, d in enumerate(DIRECTIONS):
                index[(ci, si, di)] = len(captions)
                captions.append(f"{prompt}, {d} view")
    return captions, lambda ci, si, di: index[(ci, si, di)]


# ============ diffusion training ============


def warmup_cosine_adamw(params: List[nn.Parameter], lr: float, steps: int):
    """AdamW (no weight decay) and its schedule for the bundled models' training: linear
    warm-up over min(200, steps / 10) steps, then cosine decay to 5% of ``lr``."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return (
            0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * 0.95 + 0.05
        )

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def min_snr_step(
    pred: Float[Tensor, "B C H W"],
    noise: Float[Tensor, "B C H W"],
    alphas_t: Float[Tensor, "B"],
    gamma: float,
    opt: torch.optim.Optimizer,
    sched,
    params: List[nn.Parameter],
) -> Tensor:
    """One optimiser step on the min-SNR-weighted epsilon loss (gradients clipped to norm 1);
    returns the loss."""
    snr = alphas_t / (1 - alphas_t)
    weight = torch.clamp(snr, max=gamma) / snr
    loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return loss


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)


def train_diffusion(
    data: ShapeDataset,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
    log: Optional[Callable[[int, float], None]] = None,
    **fit_options,
):
    """Trains text encoder and UNet jointly on ``data``'s pixels; returns (tokenizer, EMA text
    encoder, EMA UNet, scheduler, loss history). See ``fit_text_to_image`` for the captions."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer))
    unet = build_unet(sample_size=data.images.shape[1])
    scheduler = build_scheduler()
    tokens = tokenize(tokenizer, [c for c in caption_table()[0]])

    def encode(rows: Tensor, encoder: nn.Module) -> Tensor:
        return encoder(
            tokens.input_ids[rows], attention_mask=tokens.attention_mask[rows]
        ).last_hidden_state

    def pixels(idx: Tensor, gen: torch.Generator) -> Tensor:
        return data.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0

    ema_text, ema_unet, history = fit_text_to_image(
        data, pixels, encode, text_encoder, unet, scheduler, steps, batch_size, lr, seed,
        progress=progress, log=log, **fit_options,
    )  # fmt: skip
    return tokenizer, ema_text, ema_unet, scheduler, history


def fit_text_to_image(
    data: ShapeDataset,
    x0_of: Callable[[Tensor, torch.Generator], Tensor],
    encode: Callable[[Tensor, nn.Module], Tensor],
    text_encoder: nn.Module,
    unet: nn.Module,
    scheduler,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    p_uncond: float = 0.1,
    p_plain: float = 0.2,
    min_snr_gamma: float = 5.0,
    ema_decay: float = 0.999,
    progress: bool = True,
    log: Optional[Callable[[int, float], None]] = None,
    desc: str = "training diffusion model",
) -> Tuple[nn.Module, nn.Module, List[float]]:
    """The training loop both bundled text-to-image models share: epsilon prediction with
    min-SNR weighting, text encoder and UNet trained jointly, EMA weights returned with the loss
    history. ``x0_of(indices, generator)`` gives the clean targets of a batch of ``data`` (pixels
    or VAE latents), ``encode(caption rows, encoder)`` the caption embeddings. Captions: empty
    with ``p_uncond`` (for classifier-free guidance), the plain prompt with ``p_plain``, else
    the prompt with the camera's view words."""
    gen = torch.Generator().manual_seed(seed)
    _, caption_index = caption_table()
    ema_text, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt, sched = warmup_cosine_adamw(params, lr, steps)
    alphas = scheduler.alphas_cumprod
    cap_of = torch.tensor(
        [
            [
                [caption_index(ci, si, di) for di in range(-1, len(DIRECTIONS))]
                for si in range(len(SHAPES))
            ]
            for ci in range(len(COLORS))
        ]
    )  # [color, shape, 1 + direction]
    history: List[float] = []
    text_encoder.train()
    unet.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x0 = x0_of(idx, gen)
        u = torch.rand(batch_size, generator=gen)
        column = torch.where(u < p_plain, 0, data.direction_idx[idx] + 1)
        cap = cap_of[data.color_idx[idx], data.shape_idx[idx], column]
        cap = torch.where(torch.rand(batch_size, generator=gen) < p_uncond, 0, cap)
        # encode each distinct caption of the batch once
        unique, inverse = torch.unique(cap, return_inverse=True)
        emb = encode(unique, text_encoder)[inverse]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=emb).sample
        loss = min_snr_step(pred, noise, alphas[t], min_snr_gamma, opt, sched, params)
        decay = min(ema_decay, (1 + step) / (10 + step))
        ema_update(ema_text, text_encoder, decay)
        ema_update(ema_unet, unet, decay)
        history.append(loss.item())
        if step % 50 == 0:
            recent = sum(history[-50:]) / len(history[-50:])
            bar.set_postfix(loss=f"{recent:.4f}")
            if log is not None:
                log(step, recent)
    return ema_text.eval(), ema_unet.eval(), history


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: List[str]) -> Float[Tensor, "B 77 D"]:
    tokens = tokenize(tokenizer, prompts)
    return text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state


@torch.no_grad()
def sample_images(
    unet,
    scheduler,
    cond: Float[Tensor, "B 77 D"],
    uncond: Float[Tensor, "1 77 D"],
    guidance_scale: float = 3.0,
    steps: int = 50,
    seed: int = 0,
    progress: bool = False,
) -> Float[Tensor, "B H W 3"]:
    """Ancestral (DDPM) samples in [0, 1] with classifier-free guidance. The tiny model samples
    well this way; deterministic DDIM sampling gives it blotchy images."""
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(scheduler.config)
    ddpm.set_timesteps(steps)
    size = unet.config.sample_size
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cond.shape[0], 3, size, size, generator=gen)
    emb = torch.cat([cond, uncond.expand_as(cond)])
    for t in tqdm(ddpm.timesteps, desc="sampling", disable=not progress):
        pred = unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample
        c, u = pred.chunk(2)
        x = ddpm.step(u + guidance_scale * (c - u), t, x, generator=gen).prev_sample
    return (x.permute(0, 2, 3, 1) * 0.5 + 0.5).clamp(0.0, 1.0)
