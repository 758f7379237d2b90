from threestudio.data import uncond  # noqa: F401
