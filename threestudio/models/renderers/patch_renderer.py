from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.renderers.base import VolumeRenderer, build_base_renderer
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor


@threestudio.register("patch-renderer")
class PatchRenderer(VolumeRenderer):
    """Renders high resolutions cheaply in training: the whole view at ``1/global_downsample``
    resolution (upsampled) with one random full-resolution ``patch_size`` patch pasted in.
    In evaluation it renders the full image with the base renderer."""

    @dataclass
    class Config(VolumeRenderer.Config):
        patch_size: int = 128  # side of the full-resolution patch rendered in training
        base_renderer_type: str = ""  # registered name of the wrapped renderer (required)
        base_renderer: Optional[dict] = None  # its config
        global_detach: bool = False  # no gradient through the upsampled global render
        # the whole view is rendered at H/ds x W/ds and upsampled bilinearly
        global_downsample: int = 4

    cfg: Config

    def configure_renderer(self) -> None:
        self.base_renderer = build_base_renderer(self, "renderer")

    def forward(
        self,
        rays_o: Float[Tensor, "B H W 3"],
        rays_d: Float[Tensor, "B H W 3"],
        light_positions: Float[Tensor, "B 3"],
        bg_color: Optional[Tensor] = None,
        **kwargs,
    ) -> Dict[str, Any]:
        if not self.training:
            return self.base_renderer(rays_o, rays_d, light_positions, bg_color, **kwargs)
        B, H, W, _ = rays_o.shape
        ds = self.cfg.global_downsample
        PS = min(self.cfg.patch_size, H, W)

        def downsample(x):
            return F.interpolate(
                x.permute(0, 3, 1, 2), (H // ds, W // ds), mode="bilinear", align_corners=False
            ).permute(0, 2, 3, 1)

        out = self.base_renderer(
            downsample(rays_o), downsample(rays_d), light_positions, bg_color, **kwargs
        )
        y0 = int(torch.randint(0, H - PS + 1, (1,)).item())
        x0 = int(torch.randint(0, W - PS + 1, (1,)).item())
        out_patch = self.base_renderer(
            rays_o[:, y0 : y0 + PS, x0 : x0 + PS],
            rays_d[:, y0 : y0 + PS, x0 : x0 + PS],
            light_positions,
            bg_color,
            **kwargs,
        )
        # image-shaped outputs: upsample the global render and paste the patch into it
        for key, patch in out_patch.items():
            if not (torch.is_tensor(patch) and patch.dim() == 4 and patch.shape[1:3] == (PS, PS)):
                continue
            full = F.interpolate(
                out[key].permute(0, 3, 1, 2), (H, W), mode="bilinear", align_corners=False
            ).permute(0, 2, 3, 1)
            if self.cfg.global_detach:
                full = full.detach()
            full = full.clone()
            full[:, y0 : y0 + PS, x0 : x0 + PS] = patch
            out[key] = full
        out["patch_origin"] = (y0, x0)
        return out

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        # the base renderer is a child module: Updateable's walk has already updated it
        pass

    def train(self, mode: bool = True):
        self.base_renderer.train(mode)
        return super().train(mode=mode)

    def eval(self):
        return self.train(False)
