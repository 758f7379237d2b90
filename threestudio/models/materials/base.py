from dataclasses import dataclass

from threestudio.utils.base import BaseModule
from threestudio.utils.typing import Any, Dict, Float, Tensor


class BaseMaterial(BaseModule):
    """Turns per-point features (and normals, view and light directions) into colours."""

    @dataclass
    class Config(BaseModule.Config):
        pass

    cfg: Config
    requires_normal: bool = False
    requires_tangent: bool = False

    def configure(self):
        pass

    def forward(self, *args, **kwargs) -> Float[Tensor, "*B 3"]:
        raise NotImplementedError

    def export(self, *args, **kwargs) -> Dict[str, Any]:
        """Per-point values written as textures by the mesh exporter (e.g. ``albedo``)."""
        return {}
