from dataclasses import dataclass

import torch

from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseImplicitGeometry
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.base import BaseModule
from threestudio.utils.typing import Any, Dict, Float, Tensor


class Renderer(BaseModule):
    """Renders a camera batch. Geometry, material and background are *held*, not registered as
    children, so each keeps its own place in the system's state dict and optimiser groups."""

    @dataclass
    class Config(BaseModule.Config):
        radius: float = 1.0  # the scene box is [-radius, radius]^3

    cfg: Config

    def configure(
        self,
        geometry: BaseImplicitGeometry,
        material: BaseMaterial,
        background: BaseBackground,
    ) -> None:
        # a plain container keeps them out of this module's parameters and state_dict
        self.sub_modules = _SubModules(geometry, material, background)
        self.bbox: Float[Tensor, "2 3"]
        self.register_buffer(
            "bbox",
            torch.as_tensor([[-self.cfg.radius] * 3, [self.cfg.radius] * 3], dtype=torch.float32),
            persistent=False,
        )

    def forward(self, *args, **kwargs) -> Dict[str, Any]:
        raise NotImplementedError

    @property
    def geometry(self) -> BaseImplicitGeometry:
        return self.sub_modules.geometry

    @property
    def material(self) -> BaseMaterial:
        return self.sub_modules.material

    @property
    def background(self) -> BaseBackground:
        return self.sub_modules.background

    def set_geometry(self, geometry: BaseImplicitGeometry) -> None:
        self.sub_modules.geometry = geometry

    def set_material(self, material: BaseMaterial) -> None:
        self.sub_modules.material = material

    def set_background(self, background: BaseBackground) -> None:
        self.sub_modules.background = background


class _SubModules:
    def __init__(self, geometry, material, background):
        self.geometry, self.material, self.background = geometry, material, background


class VolumeRenderer(Renderer):
    pass


class Rasterizer(Renderer):
    pass
