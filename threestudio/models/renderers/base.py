from dataclasses import dataclass

import torch

from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseGeometry
from threestudio.models.materials.base import BaseMaterial
from threestudio.models.sub_modules import HoldsSubModules
from threestudio.utils.base import BaseModule
from threestudio.utils.typing import Any, Dict, Float, Tensor


class Renderer(HoldsSubModules, BaseModule):
    """Renders a camera batch. Geometry, material and background are *held*, not registered as
    children, so each keeps its own place in the system's state dict and optimiser groups.
    Subclasses put their own set-up in ``configure_renderer``."""

    @dataclass
    class Config(BaseModule.Config):
        radius: float = 1.0  # the scene box is [-radius, radius]^3

    cfg: Config

    def configure(
        self,
        geometry: BaseGeometry,
        material: BaseMaterial,
        background: BaseBackground,
    ) -> None:
        self.hold(geometry, material, background)
        self.bbox: Float[Tensor, "2 3"]
        self.register_buffer(
            "bbox",
            torch.as_tensor([[-self.cfg.radius] * 3, [self.cfg.radius] * 3], dtype=torch.float32),
            persistent=False,
        )
        self.configure_renderer()

    def configure_renderer(self) -> None:
        """The subclass's set-up, once ``geometry``/``material``/``background`` and ``bbox``
        are in place."""

    def forward(self, *args, **kwargs) -> Dict[str, Any]:
        raise NotImplementedError


class VolumeRenderer(Renderer):
    pass


class Rasterizer(Renderer):
    pass


def build_base_renderer(renderer: Renderer, what: str = "renderer") -> Renderer:
    """The renderer a wrapping renderer (patch-renderer, gan-volume-renderer) draws with: the one
    registered as ``cfg.base_renderer_type``, configured by ``cfg.base_renderer``, over the
    wrapper's geometry, material and background."""
    import threestudio
    from threestudio.utils.errors import ConfigError

    if not renderer.cfg.base_renderer_type:
        raise ConfigError(
            f"renderer.base_renderer_type is empty: name the {what} to wrap "
            "(e.g. nerf-volume-renderer)"
        )
    return threestudio.find(renderer.cfg.base_renderer_type)(
        renderer.cfg.base_renderer,
        geometry=renderer.geometry,
        material=renderer.material,
        background=renderer.background,
    )
