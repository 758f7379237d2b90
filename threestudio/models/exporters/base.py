from dataclasses import dataclass

from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseImplicitGeometry
from threestudio.models.materials.base import BaseMaterial
from threestudio.utils.base import BaseObject
from threestudio.utils.typing import List


@dataclass
class ExporterOutput:
    """One file to write: ``save_type`` names a ``SaverMixin.save_<type>`` method that is called
    as ``save_<type>(save_name, **params)``."""

    save_name: str
    save_type: str
    params: dict


class Exporter(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        save_video: bool = False  # unused; accepted for configs of the original threestudio

    cfg: Config

    def configure(
        self,
        geometry: BaseImplicitGeometry,
        material: BaseMaterial,
        background: BaseBackground,
    ) -> None:
        # held in a plain container so the exporter never owns the modules
        self.sub_modules = {"geometry": geometry, "material": material, "background": background}

    @property
    def geometry(self) -> BaseImplicitGeometry:
        return self.sub_modules["geometry"]

    @property
    def material(self) -> BaseMaterial:
        return self.sub_modules["material"]

    @property
    def background(self) -> BaseBackground:
        return self.sub_modules["background"]

    def __call__(self, *args, **kwargs) -> List[ExporterOutput]:
        raise NotImplementedError
