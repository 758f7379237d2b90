from threestudio.systems import base, dreamfusion, reconstruction, sjc, textmesh  # noqa: F401
