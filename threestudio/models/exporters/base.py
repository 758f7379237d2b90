from dataclasses import dataclass

from threestudio.models.background.base import BaseBackground
from threestudio.models.geometry.base import BaseGeometry
from threestudio.models.materials.base import BaseMaterial
from threestudio.models.sub_modules import HoldsSubModules
from threestudio.utils.base import BaseObject
from threestudio.utils.typing import List


@dataclass
class ExporterOutput:
    """One file to write: ``save_type`` names a ``SaverMixin.save_<type>`` method that is called
    as ``save_<type>(save_name, **params)``."""

    save_name: str
    save_type: str
    params: dict


class Exporter(HoldsSubModules, BaseObject):
    """Turns the held geometry, material and background into files (``ExporterOutput``s).
    Subclasses put their own set-up in ``configure_exporter``."""

    @dataclass
    class Config(BaseObject.Config):
        save_video: bool = False  # unused; accepted for configs of the original threestudio

    cfg: Config

    def configure(
        self,
        geometry: BaseGeometry,
        material: BaseMaterial,
        background: BaseBackground,
    ) -> None:
        self.hold(geometry, material, background)
        self.configure_exporter()

    def configure_exporter(self) -> None:
        """The subclass's set-up, once ``geometry``/``material``/``background`` are held."""

    def __call__(self, *args, **kwargs) -> List[ExporterOutput]:
        raise NotImplementedError
