from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.guidance.zero123_guidance import Zero123Guidance
from threestudio.utils.typing import Float, Tensor


@threestudio.register("stable-zero123-guidance")
class StableZero123Guidance(Zero123Guidance):
    """Stable Zero123: Zero-1-to-3's architecture trained on better renders, with a camera
    embedding that gives the conditioning view's absolute polar angle instead of Δdistance."""

    @dataclass
    class Config(Zero123Guidance.Config):
        pretrained_model_name_or_path: str = "load/zero123/stable-zero123-diffusers"
        guidance_scale: float = 3.0

    cfg: Config

    def camera_embedding(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
    ) -> Float[Tensor, "B 4"]:
        """[Δpolar (rad), sin Δazimuth, cos Δazimuth, polar of the conditioning view (rad)]."""
        d_polar = (90 - elevation) - (90 - self.cfg.cond_elevation_deg)
        d_azimuth = torch.deg2rad(azimuth - self.cfg.cond_azimuth_deg)
        cond_polar = torch.full_like(elevation, 90 - self.cfg.cond_elevation_deg)
        return torch.stack(
            [
                torch.deg2rad(d_polar),
                torch.sin(d_azimuth),
                torch.cos(d_azimuth),
                torch.deg2rad(cond_polar),
            ],
            dim=-1,
        )
