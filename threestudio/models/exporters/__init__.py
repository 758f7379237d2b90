from threestudio.models.exporters import base, dummy_exporter, mesh_exporter  # noqa: F401
