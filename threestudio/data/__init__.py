from threestudio.data import image, synthetic, uncond  # noqa: F401
