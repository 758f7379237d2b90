from threestudio.systems import base, dreamfusion, reconstruction  # noqa: F401
