"""Colour straight from the geometry's features (through an activation), or through a small MLP
when ``input_feature_dims`` and ``mlp_network_config`` are both given."""

from dataclasses import dataclass

import threestudio
from threestudio.models.materials.base import BaseMaterial
from threestudio.models.networks import get_mlp
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor


@threestudio.register("no-material")
class NoMaterial(BaseMaterial):
    @dataclass
    class Config(BaseMaterial.Config):
        n_output_dims: int = 3  # colour channels
        color_activation: str = "sigmoid"  # a get_activation name
        # with mlp_network_config: an MLP from this many features to the colour; else the
        # features are the colour
        input_feature_dims: Optional[int] = None
        mlp_network_config: Optional[dict] = None  # see input_feature_dims
        requires_normal: bool = False  # ask the renderer for the geometry's normals

    cfg: Config

    def configure(self) -> None:
        self.use_network = (
            self.cfg.input_feature_dims is not None and self.cfg.mlp_network_config is not None
        )
        if self.use_network:
            self.network = get_mlp(
                self.cfg.input_feature_dims, self.cfg.n_output_dims, self.cfg.mlp_network_config
            )
        self.color_activation = get_activation(self.cfg.color_activation)
        self.requires_normal = self.cfg.requires_normal

    def forward(self, features: Float[Tensor, "*B Nf"], **kwargs) -> Float[Tensor, "*B Nc"]:
        if self.use_network:
            color = self.network(features.reshape(-1, features.shape[-1])).view(
                *features.shape[:-1], self.cfg.n_output_dims
            )
        else:
            if features.shape[-1] != self.cfg.n_output_dims:
                raise ValueError(
                    f"no-material without a network passes features through: expected "
                    f"{self.cfg.n_output_dims} channels (n_output_dims), got {features.shape[-1]}"
                )
            color = features
        return self.color_activation(color)

    def export(self, features: Float[Tensor, "*N Nf"], **kwargs) -> Dict[str, Any]:
        color = self(features, **kwargs).clamp(0, 1)
        if color.shape[-1] < 3:
            raise ValueError(f"cannot export albedo from {color.shape[-1]} colour channels")
        if color.shape[-1] > 3:
            threestudio.warn("colour has more than 3 channels: the first 3 are exported as RGB")
        return {"albedo": color[..., :3]}
