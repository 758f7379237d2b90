from threestudio.data import image, synthetic, uncond, uncond_eff  # noqa: F401
