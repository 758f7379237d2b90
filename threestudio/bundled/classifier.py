"""The shape-and-colour classifier of the bundled world: a small CNN that names the shape and
colour of a 32x32 image. ``scripts/train_tiny_model.py`` trains it on the world's renders into
``load/tiny-shapes/classifier``; ``threestudio.bundled.evaluation`` scores text-to-3D results with
it, and the training script scores the tiny model's samples with it.
"""

import json
import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from threestudio.bundled.shapes import COLORS, SHAPES, ShapeDataset
from threestudio.utils.typing import Dict, Float, Optional, Tensor, Tuple


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
        """log p(prompt | image) for the 30 prompts of ``threestudio.bundled.shapes.all_prompts``
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
