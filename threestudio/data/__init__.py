from threestudio.data import synthetic, uncond  # noqa: F401
