"""Regularisation losses shared by systems."""

import torch

from threestudio.utils.ops import binary_cross_entropy
from threestudio.utils.typing import Float, Tensor


def tv_loss(input_t: Float[Tensor, "B C H W"], beta: float = 2.0) -> Float[Tensor, ""]:
    """Total variation of an image batch (mean over pixels)."""
    dy = input_t[:, :, 1:, :-1] - input_t[:, :, :-1, :-1]
    dx = input_t[:, :, :-1, 1:] - input_t[:, :, :-1, :-1]
    return torch.mean((dx.abs() ** beta + dy.abs() ** beta) if beta != 1 else dx.abs() + dy.abs())


def binary_entropy(opacity: Float[Tensor, "..."], eps: float = 1e-5) -> Float[Tensor, ""]:
    """Mean binary entropy of opacities (clamped to ``[eps, 1 - eps]``): zero when every ray is
    fully empty or fully opaque. The opaque loss: it pushes rays to either end instead of
    letting the field fade away as a plain opacity penalty does."""
    x = opacity.clamp(eps, 1.0 - eps)
    return binary_cross_entropy(x, x)


def normal_smoothness_2d(normal: Float[Tensor, "B H W 3"]) -> Float[Tensor, ""]:
    """Squared differences of neighbouring pixels of a rendered normal map (mean over each
    direction, the two summed): a smooth surface in image space."""
    return (normal[:, 1:] - normal[:, :-1]).square().mean() + (
        normal[:, :, 1:] - normal[:, :, :-1]
    ).square().mean()
