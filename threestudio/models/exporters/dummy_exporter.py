import threestudio
from threestudio.models.exporters.base import Exporter, ExporterOutput
from threestudio.utils.typing import List


@threestudio.register("dummy-exporter")
class DummyExporter(Exporter):
    """Writes nothing; for systems that have no mesh to export."""

    def __call__(self, *args, **kwargs) -> List[ExporterOutput]:
        return []
