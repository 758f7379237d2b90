"""Background colour as an MLP of the (encoded) ray direction. In training it can be replaced by
a random solid colour (``random_aug``) so the foreground cannot hide in the background."""

import random
from dataclasses import dataclass, field

import torch

import threestudio
from threestudio.models.background.base import BaseBackground
from threestudio.models.networks import get_encoding, get_mlp
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Float, Optional, Tensor, Tuple


def random_solid_color(dirs: Tensor, n_output_dims: int, shared: bool) -> Tensor:
    """A random colour per batch item (or one for the whole batch when ``shared``), expanded
    over the leading batch dimension of ``dirs`` [B, ..., 3]."""
    n = 1 if shared else dirs.shape[0]
    color = torch.rand(n, n_output_dims, dtype=dirs.dtype, device=dirs.device)
    color = color.view(n, *([1] * (dirs.ndim - 2)), n_output_dims)
    return color.expand(*dirs.shape[:-1], n_output_dims)


@threestudio.register("neural-environment-map-background")
class NeuralEnvironmentMapBackground(BaseBackground):
    @dataclass
    class Config(BaseBackground.Config):
        n_output_dims: int = 3  # colour channels
        color_activation: str = "sigmoid"  # a get_activation name
        # encoding of the ray direction (tcnn vocabulary)
        dir_encoding_config: dict = field(
            default_factory=lambda: {"otype": "SphericalHarmonics", "degree": 3}
        )
        mlp_network_config: dict = field(  # the MLP from encoded direction to colour
            default_factory=lambda: {
                "otype": "VanillaMLP",
                "activation": "ReLU",
                "n_neurons": 16,
                "n_hidden_layers": 2,
            }
        )
        # in training, replace the background by a random solid colour with random_aug_prob,
        # so the object cannot be painted into the background
        random_aug: bool = False
        random_aug_prob: float = 0.5  # see random_aug
        # a fixed colour in validation/test instead of the learned map
        eval_color: Optional[Tuple[float, float, float]] = None
        # one random colour for the whole batch (multi-view batches) instead of one per view
        share_aug_bg: bool = False

    cfg: Config

    def configure(self) -> None:
        self.encoding = get_encoding(3, self.cfg.dir_encoding_config)
        self.network = get_mlp(
            self.encoding.n_output_dims, self.cfg.n_output_dims, self.cfg.mlp_network_config
        )
        self.color_activation = get_activation(self.cfg.color_activation)

    def forward(self, dirs: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B H W Nc"]:
        if not self.training and self.cfg.eval_color is not None:
            color = torch.as_tensor(self.cfg.eval_color, dtype=dirs.dtype, device=dirs.device)
            return color.expand(*dirs.shape[:-1], self.cfg.n_output_dims).clone()
        # unit directions in [-1, 1] -> [0, 1], the encodings' input range
        dirs_embedding = self.encoding(((dirs + 1.0) / 2.0).reshape(-1, 3))
        color = self.network(dirs_embedding).view(*dirs.shape[:-1], self.cfg.n_output_dims)
        color = self.color_activation(color)
        if self.training and self.cfg.random_aug and random.random() < self.cfg.random_aug_prob:
            # `color * 0` keeps the network in the graph (DDP checks for unused parameters)
            color = color * 0 + random_solid_color(
                dirs, self.cfg.n_output_dims, self.cfg.share_aug_bg
            )
        return color
