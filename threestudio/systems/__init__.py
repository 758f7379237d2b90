from threestudio.systems import base, reconstruction  # noqa: F401
