from threestudio.models.exporters import base, dummy_exporter  # noqa: F401
