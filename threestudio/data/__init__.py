from threestudio.data import co3d, image, synthetic, uncond, uncond_eff  # noqa: F401
