"""A learned low-resolution texture over the sphere of directions (equirectangular layout):
row coordinate = polar angle from +z, column coordinate = azimuth."""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.models.background.base import BaseBackground
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Float, Tensor


def direction_to_uv(dirs: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B 2"]:
    """(u, v) in [0, 1]: u = polar angle / pi (0 at +z), v = azimuth / 2pi + 0.5 (0.5 at +x)."""
    x, y, z = dirs.unbind(-1)
    u = torch.atan2(torch.sqrt(x**2 + y**2), z) / math.pi
    v = torch.atan2(y, x) / (2 * math.pi) + 0.5
    return torch.stack([u, v], dim=-1)


@threestudio.register("textured-background")
class TexturedBackground(BaseBackground):
    @dataclass
    class Config(BaseBackground.Config):
        n_output_dims: int = 3  # colour channels
        # texels per column of the learned equirectangular texture (rows: polar angle from +z)
        height: int = 64
        width: int = 64  # texels per row (azimuth)
        color_activation: str = "sigmoid"  # a get_activation name

    cfg: Config

    def configure(self) -> None:
        self.texture = nn.Parameter(
            torch.randn(1, self.cfg.n_output_dims, self.cfg.height, self.cfg.width)
        )
        self.color_activation = get_activation(self.cfg.color_activation)

    def forward(self, dirs: Float[Tensor, "*B 3"]) -> Float[Tensor, "*B Nc"]:
        uv = direction_to_uv(dirs.reshape(-1, 3))
        # grid_sample's (x, y) = (column, row) = (v, u), in [-1, 1]
        grid = (uv.flip(-1) * 2 - 1).view(1, -1, 1, 2)
        color = F.grid_sample(
            self.texture, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        color = color.view(self.cfg.n_output_dims, -1).T.reshape(
            *dirs.shape[:-1], self.cfg.n_output_dims
        )
        return self.color_activation(color)
