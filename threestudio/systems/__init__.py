from threestudio.systems import base  # noqa: F401
