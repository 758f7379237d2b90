from threestudio.data import co3d, image, multiview, synthetic, uncond, uncond_eff  # noqa: F401
