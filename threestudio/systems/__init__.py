from threestudio.systems import base, dreamfusion, reconstruction, sdi  # noqa: F401
