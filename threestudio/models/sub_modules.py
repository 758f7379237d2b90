"""The geometry, material and background that renderers and exporters work on."""

from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseGeometry
from threestudio.models.materials.base import BaseMaterial


class SubModules:
    """A plain container (not an ``nn.Module``): what it holds stays out of its holder's
    parameters and state_dict, and keeps its own place in the system's state dict and
    optimiser groups."""

    def __init__(self, geometry, material, background):
        self.geometry, self.material, self.background = geometry, material, background


class HoldsSubModules:
    """``geometry``, ``material`` and ``background`` read from ``self.sub_modules``; ``hold``
    (called from ``configure``) stores them without owning them."""

    sub_modules: SubModules

    def hold(self, geometry: BaseGeometry, material: BaseMaterial, background: BaseBackground):
        self.sub_modules = SubModules(geometry, material, background)

    @property
    def geometry(self) -> BaseGeometry:
        return self.sub_modules.geometry

    @property
    def material(self) -> BaseMaterial:
        return self.sub_modules.material

    @property
    def background(self) -> BaseBackground:
        return self.sub_modules.background

    def set_geometry(self, geometry: BaseGeometry) -> None:
        self.sub_modules.geometry = geometry

    def set_material(self, material: BaseMaterial) -> None:
        self.sub_modules.material = material

    def set_background(self, background: BaseBackground) -> None:
        self.sub_modules.background = background
