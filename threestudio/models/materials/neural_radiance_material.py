"""View-dependent colour: an MLP of the geometry features and the encoded view direction."""

from dataclasses import dataclass, field

import torch

import threestudio
from threestudio.models.materials.base import BaseMaterial
from threestudio.models.networks import get_encoding, get_mlp
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Float, Tensor


@threestudio.register("neural-radiance-material")
class NeuralRadianceMaterial(BaseMaterial):
    @dataclass
    class Config(BaseMaterial.Config):
        input_feature_dims: int = 8  # the geometry's n_feature_dims
        color_activation: str = "sigmoid"  # a get_activation name
        # encoding of the view direction (tcnn vocabulary)
        dir_encoding_config: dict = field(
            default_factory=lambda: {"otype": "SphericalHarmonics", "degree": 3}
        )
        # the MLP from features + encoded direction to colour
        mlp_network_config: dict = field(
            default_factory=lambda: {
                "otype": "FullyFusedMLP",
                "activation": "ReLU",
                "n_neurons": 16,
                "n_hidden_layers": 2,
            }
        )
        requires_normal: bool = False  # ask the renderer for the geometry's normals

    cfg: Config

    def configure(self) -> None:
        self.encoding = get_encoding(3, self.cfg.dir_encoding_config)
        self.n_input_dims = self.cfg.input_feature_dims + self.encoding.n_output_dims
        self.network = get_mlp(self.n_input_dims, 3, self.cfg.mlp_network_config)
        self.color_activation = get_activation(self.cfg.color_activation)
        self.requires_normal = self.cfg.requires_normal

    def forward(
        self, features: Float[Tensor, "*B Nf"], viewdirs: Float[Tensor, "*B 3"], **kwargs
    ) -> Float[Tensor, "*B 3"]:
        if features.shape[-1] != self.cfg.input_feature_dims:
            raise ValueError(
                f"neural-radiance-material expects {self.cfg.input_feature_dims} feature channels "
                f"(input_feature_dims), got {features.shape[-1]}"
            )
        # unit directions in [-1, 1] -> [0, 1], the encodings' input range
        dirs_embedding = self.encoding(((viewdirs + 1.0) / 2.0).reshape(-1, 3))
        network_input = torch.cat([features.reshape(-1, features.shape[-1]), dirs_embedding], -1)
        color = self.network(network_input).view(*features.shape[:-1], 3)
        return self.color_activation(color)
