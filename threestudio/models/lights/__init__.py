"""Lighting used by materials: split-sum image-based lighting from environment maps."""

from threestudio.models.lights import split_sum  # noqa: F401
