from threestudio.systems import base, dreamfusion, fantasia3d, reconstruction  # noqa: F401
