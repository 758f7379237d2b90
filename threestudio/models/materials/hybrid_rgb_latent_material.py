"""Features carry RGB in the first 3 channels (activated) followed by latent channels that are
passed through untouched (stages that supervise both colour and latents)."""

from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Float, Tensor


@threestudio.register("hybrid-rgb-latent-material")
class HybridRGBLatentMaterial(BaseMaterial):
    @dataclass
    class Config(BaseMaterial.Config):
        n_output_dims: int = 3  # channels: the first 3 are activated as RGB, the rest pass through
        color_activation: str = "sigmoid"  # a get_activation name, for the RGB channels
        requires_normal: bool = True  # ask the renderer for the geometry's normals

    cfg: Config

    def configure(self) -> None:
        self.color_activation = get_activation(self.cfg.color_activation)
        self.requires_normal = self.cfg.requires_normal

    def forward(self, features: Float[Tensor, "*B Nf"], **kwargs) -> Float[Tensor, "*B Nc"]:
        if features.shape[-1] != self.cfg.n_output_dims:
            raise ValueError(
                f"hybrid-rgb-latent-material expects {self.cfg.n_output_dims} channels "
                f"(n_output_dims), got {features.shape[-1]}"
            )
        # no in-place write: the features may be needed by autograd elsewhere
        return torch.cat([self.color_activation(features[..., :3]), features[..., 3:]], dim=-1)
