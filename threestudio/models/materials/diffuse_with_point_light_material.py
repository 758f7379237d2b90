"""Lambertian shading under one point light plus ambient light (DreamFusion). During training
the shading is randomised per batch: plain albedo, textureless (white albedo) or full diffuse."""

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import dot, get_activation
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor, Tuple

SHADINGS = ("albedo", "textureless", "diffuse")


@threestudio.register("diffuse-with-point-light-material")
class DiffuseWithPointLightMaterial(BaseMaterial):
    @dataclass
    class Config(BaseMaterial.Config):
        # colour = albedo * (ambient + diffuse * max(0, n . l)), l towards the light
        ambient_light_color: Tuple[float, float, float] = (0.1, 0.1, 0.1)
        diffuse_light_color: Tuple[float, float, float] = (0.9, 0.9, 0.9)  # see ambient_light_color
        # before this step only the albedo is shown (shapes form before shading is trusted)
        ambient_only_steps: int = 1000
        # in training: P(shaded) = diffuse_prob; among shaded, P(textureless) = textureless_prob
        diffuse_prob: float = 0.75
        textureless_prob: float = 0.5  # share of the shaded batches drawn with a white albedo
        albedo_activation: str = "sigmoid"  # a get_activation name, applied to features[..., :3]
        # in training, draw the ambient/diffuse split at random (Magic3D-style soft shading)
        soft_shading: bool = False
        # outside training (validation, test video, export preview) show the albedo only, e.g.
        # for refine stages whose texture is judged without the point light
        ambient_only_on_test: bool = False

    cfg: Config
    requires_normal: bool = True

    def configure(self) -> None:
        for key in ("diffuse_prob", "textureless_prob"):
            value = getattr(self.cfg, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key} must be a probability in [0, 1], got {value}")
        self.albedo_activation = get_activation(self.cfg.albedo_activation)
        self.register_buffer(
            "ambient_light_color",
            torch.as_tensor(self.cfg.ambient_light_color, dtype=torch.float32),
        )
        self.register_buffer(
            "diffuse_light_color",
            torch.as_tensor(self.cfg.diffuse_light_color, dtype=torch.float32),
        )
        self.ambient_only = False

    def choose_shading(self) -> str:
        if self.training:
            # one choice for the whole batch
            if self.ambient_only or random.random() >= self.cfg.diffuse_prob:
                return "albedo"
            if random.random() < self.cfg.textureless_prob:
                return "textureless"
            return "diffuse"
        if self.ambient_only or self.cfg.ambient_only_on_test:
            return "albedo"
        return "diffuse"

    def forward(
        self,
        features: Float[Tensor, "*B Nf"],
        positions: Float[Tensor, "*B 3"],
        shading_normal: Float[Tensor, "*B 3"],
        light_positions: Float[Tensor, "*B 3"],
        ambient_ratio: Optional[float] = None,
        shading: Optional[str] = None,
        **kwargs,
    ) -> Float[Tensor, "*B 3"]:
        albedo = self.albedo_activation(features[..., :3])

        if ambient_ratio is not None:
            ambient = torch.full_like(self.ambient_light_color, ambient_ratio)
            diffuse = torch.full_like(self.diffuse_light_color, 1.0 - ambient_ratio)
        elif self.training and self.cfg.soft_shading:
            diffuse = torch.full_like(self.diffuse_light_color, random.random())
            ambient = 1.0 - diffuse
        else:
            ambient, diffuse = self.ambient_light_color, self.diffuse_light_color

        light_dirs = F.normalize(light_positions - positions, dim=-1)
        lambert = dot(shading_normal, light_dirs).clamp(min=0.0)
        textureless_color = lambert * diffuse + ambient
        if shading is None:
            shading = self.choose_shading()
        # unused branches are multiplied by 0 so DDP sees every parameter in the graph
        if shading == "albedo":
            return albedo + textureless_color * 0
        if shading == "textureless":
            return albedo * 0 + textureless_color
        if shading == "diffuse":
            return albedo.clamp(0.0, 1.0) * textureless_color
        raise ConfigError(f"unknown shading '{shading}' (use one of {', '.join(SHADINGS)})")

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        self.ambient_only = global_step < self.cfg.ambient_only_steps

    def export(self, features: Float[Tensor, "*N Nf"], **kwargs) -> Dict[str, Any]:
        return {"albedo": self.albedo_activation(features[..., :3]).clamp(0.0, 1.0)}
