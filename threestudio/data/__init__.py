from threestudio.data import image, multiview, synthetic, uncond, uncond_eff  # noqa: F401
