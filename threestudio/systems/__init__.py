from threestudio.systems import base, dreamfusion, latentnerf, reconstruction  # noqa: F401
