"""One colour for every direction, fixed or learned."""

import random
from dataclasses import dataclass

import torch
import torch.nn as nn

import threestudio
from threestudio.models.background.base import BaseBackground
from threestudio.models.background.neural_environment_map_background import random_solid_color
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Float, Tensor, Tuple


@threestudio.register("solid-color-background")
class SolidColorBackground(BaseBackground):
    @dataclass
    class Config(BaseBackground.Config):
        n_output_dims: int = 3  # colour channels (as many as color has)
        color: Tuple = (1.0, 1.0, 1.0)  # RGB in [0, 1]
        learned: bool = False  # the colour is a parameter that starts at color
        # in training, replace the colour by a random one per view with random_aug_prob
        random_aug: bool = False
        random_aug_prob: float = 0.5  # see random_aug

    cfg: Config

    def configure(self) -> None:
        if len(self.cfg.color) != self.cfg.n_output_dims:
            raise ConfigError(
                f"color has {len(self.cfg.color)} values but n_output_dims is "
                f"{self.cfg.n_output_dims}"
            )
        color = torch.as_tensor(tuple(self.cfg.color), dtype=torch.float32)
        if self.cfg.learned:
            self.env_color = nn.Parameter(color)
        else:
            self.register_buffer("env_color", color)

    def forward(self, dirs: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B H W Nc"]:
        color = torch.ones(*dirs.shape[:-1], 1, dtype=dirs.dtype, device=dirs.device)
        color = color * self.env_color.to(dirs)
        if self.training and self.cfg.random_aug and random.random() < self.cfg.random_aug_prob:
            color = color * 0 + random_solid_color(dirs, self.cfg.n_output_dims, shared=False)
        return color
