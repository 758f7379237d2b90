from dataclasses import dataclass

from threestudio.utils.base import BaseModule
from threestudio.utils.typing import Float, Tensor


class BaseBackground(BaseModule):
    """Colour seen along rays that leave the scene, as a function of the ray direction."""

    @dataclass
    class Config(BaseModule.Config):
        pass

    cfg: Config

    def configure(self):
        pass

    def forward(self, dirs: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B H W Nc"]:
        raise NotImplementedError
