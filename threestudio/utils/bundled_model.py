"""The bundled tiny text-to-image model and its shape-and-colour classifier.

The model is a DeepFloyd-IF-style pixel-space pipeline at 32x32 built from the real classes
(``T5Tokenizer``, ``T5EncoderModel``, ``UNet2DConditionModel``, ``DDPMScheduler``) and saved with
``IFPipeline.save_pretrained``, so ``deep-floyd-guidance`` and ``deep-floyd-prompt-processor``
load it unchanged through ``pretrained_model_name_or_path``. It is trained from scratch on the
synthetic world of ``threestudio.data.shapes`` by ``scripts/train_tiny_model.py``.

The classifier (``classifier/`` in the same folder) names the shape and colour of a 32x32 image;
``threestudio.utils.evaluation`` uses it to score text-to-3D results in that world.
"""

import copy
import json
import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from threestudio.data.shapes import COLORS, DIRECTIONS, SHAPES, ShapeDataset, known_words
from threestudio.utils.typing import Callable, Dict, Float, List, Optional, Tensor, Tuple

MAX_LENGTH = 77  # the prompt processor pads T5 prompts to 77 tokens, as DeepFloyd IF does
BUNDLED_MODEL_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "load",
    "tiny-shapes",
)
VOCABULARY_FILE = "vocabulary.json"


# ============ the pipeline's parts ============


def build_tokenizer():
    """A T5 (unigram) tokenizer whose pieces are the words of the bundled world; any other word
    becomes ``<unk>``."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -5.0), (",", -1.0)]
    pieces += [("▁" + w, -1.0) for w in known_words()]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = MAX_LENGTH
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
        max_length=MAX_LENGTH,
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


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1.0 - decay)


def train_diffusion(
    data: ShapeDataset,
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
):
    """Trains text encoder and UNet jointly on ``data``; returns (tokenizer, EMA text encoder,
    EMA UNet, scheduler, loss history). Captions: empty with ``p_uncond`` (for classifier-free
    guidance), the plain prompt with ``p_plain``, else the prompt with the camera's view words."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer))
    unet = build_unet(sample_size=data.images.shape[1])
    scheduler = build_scheduler()
    captions, caption_index = caption_table()
    tokens = tokenize(tokenizer, captions)
    ema_text, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10 + 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return (
            0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * 0.95 + 0.05
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
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
    bar = tqdm(range(steps), desc="training diffusion model", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x0 = data.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        u = torch.rand(batch_size, generator=gen)
        column = torch.where(u < p_plain, 0, data.direction_idx[idx] + 1)
        cap = cap_of[data.color_idx[idx], data.shape_idx[idx], column]
        cap = torch.where(torch.rand(batch_size, generator=gen) < p_uncond, 0, cap)
        # encode each distinct caption of the batch once
        unique, inverse = torch.unique(cap, return_inverse=True)
        emb = text_encoder(
            tokens.input_ids[unique], attention_mask=tokens.attention_mask[unique]
        ).last_hidden_state[inverse]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=emb).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=min_snr_gamma) / snr  # min-SNR weighting, epsilon target
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_text, text_encoder, decay)
        _ema_update(ema_unet, unet, decay)
        history.append(loss.item())
        if step % 50 == 0:
            recent = sum(history[-50:]) / len(history[-50:])
            bar.set_postfix(loss=f"{recent:.4f}")
            if log is not None:
                log(step, recent)
    return tokenizer, ema_text.eval(), ema_unet.eval(), scheduler, history


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


# ============ the shape-and-colour classifier ============


class ShapeColorClassifier(nn.Module):
    """A small CNN naming the shape (of ``SHAPES``) and colour (of ``COLORS``) of an image."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
            )  # fmt: skip

        self.features = nn.Sequential(
            block(3, width), nn.AvgPool2d(2),
            block(width, 2 * width), nn.AvgPool2d(2),
            block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.shape_head = nn.Linear(4 * width, len(SHAPES))
        self.color_head = nn.Linear(4 * width, len(COLORS))
        self.size = 32

    def forward(self, images: Float[Tensor, "B H W 3"]) -> Tuple[Tensor, Tensor]:
        """Logits of shape and colour for images in [0, 1] of any size (resized to 32x32)."""
        x = images.permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, (self.size, self.size), mode="area")
        h = self.features(x * 2.0 - 1.0)
        return self.shape_head(h), self.color_head(h)

    def prompt_log_probs(self, images: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B P"]:
        """log p(prompt | image) for the 30 prompts of ``threestudio.data.shapes.all_prompts``
        (colour-major), assuming shape and colour independent."""
        shape_logits, color_logits = self(images)
        ls = F.log_softmax(shape_logits, -1)
        lc = F.log_softmax(color_logits, -1)
        return (lc[:, :, None] + ls[:, None, :]).flatten(1)

    def save(self, folder: str, metrics: Optional[dict] = None) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), os.path.join(folder, "model.safetensors"))
        config = {"shapes": list(SHAPES), "colors": list(COLORS), "size": self.size}
        config.update(metrics or {})
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f, indent=1)

    @classmethod
    def load(cls, folder: str) -> "ShapeColorClassifier":
        from safetensors.torch import load_file

        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        if config["shapes"] != list(SHAPES) or config["colors"] != list(COLORS):
            raise ValueError(f"classifier in {folder} was trained on other shapes or colours")
        model = cls()
        model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
        return model.eval()


def train_classifier(
    data: ShapeDataset,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> ShapeColorClassifier:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ShapeColorClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    n_steps = epochs * math.ceil(len(data) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=n_steps)
    bar = tqdm(total=n_steps, desc="training classifier", disable=not progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            idx = order[i : i + batch_size]
            images = data.images[idx].float() / 255.0
            shape_logits, color_logits = model(images)
            loss = F.cross_entropy(shape_logits, data.shape_idx[idx]) + F.cross_entropy(
                color_logits, data.color_idx[idx]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: ShapeColorClassifier, data: ShapeDataset) -> Dict[str, float]:
    shape_logits, color_logits = model(data.images.float() / 255.0)
    shape_ok = shape_logits.argmax(-1) == data.shape_idx
    color_ok = color_logits.argmax(-1) == data.color_idx
    return {
        "shape_accuracy": shape_ok.float().mean().item(),
        "color_accuracy": color_ok.float().mean().item(),
        "accuracy": (shape_ok & color_ok).float().mean().item(),
    }
