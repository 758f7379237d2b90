"""Features are 4 Stable Diffusion latent channels; a fixed linear map approximates their RGB
preview (Latent-NeRF), so the latent scene can be looked at without the VAE decoder."""

from dataclasses import dataclass

import torch
import torch.nn as nn

import threestudio
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.typing import Float, Tensor

# rows: latent channels L1..L4, columns: R, G, B (the Latent-NeRF approximation)
LATENT_TO_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


@threestudio.register("sd-latent-adapter-material")
class StableDiffusionLatentAdapterMaterial(BaseMaterial):
    @dataclass
    class Config(BaseMaterial.Config):
        pass

    cfg: Config

    def configure(self) -> None:
        # a parameter (as published checkpoints store it) that no optimiser needs to touch
        self.adapter = nn.Parameter(torch.as_tensor(LATENT_TO_RGB, dtype=torch.float32))

    def forward(self, features: Float[Tensor, "*B 4"], **kwargs) -> Float[Tensor, "*B 3"]:
        if features.shape[-1] != 4:
            raise ValueError(
                f"sd-latent-adapter-material expects 4 latent channels, got {features.shape[-1]}"
            )
        color = features @ self.adapter  # in about [-1, 1]
        return ((color + 1.0) / 2.0).clamp(0.0, 1.0)
