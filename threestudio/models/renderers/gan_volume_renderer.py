from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.renderers.base import VolumeRenderer, build_base_renderer
from threestudio.utils.errors import ConfigError
from threestudio.utils.GAN.discriminator import NLayerDiscriminator, weights_init
from threestudio.utils.GAN.distribution import DiagonalGaussianDistribution
from threestudio.utils.GAN.mobilenet import MobileNetV3
from threestudio.utils.GAN.vae import Decoder, Encoder
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor

# the generator's levels (widths ch * m); it upsamples by 2^(len - 1) = 4
CH_MULT = (1, 2, 4)
Z_CHANNELS = 4  # latent channels the generator takes (the field renders mean and log-variance)
STYLE_CHANNELS = 64  # the global encoder's code, added in every generator block
GLOBAL_SIZE = 224  # the global encoder's input size
# in training, full-resolution rays on a stride-8 lattice (random offset) are also rendered
INTERLEAVE = 8


@threestudio.register("gan-volume-renderer")
class GANVolumeRenderer(VolumeRenderer):
    """Control4D's renderer: the base volume renderer draws the view at a quarter of the
    resolution, with 3 RGB channels and ``2 * 4`` latent channels (the mean and log-variance of a
    Gaussian latent map); a 2D generator turns the RGB and a latent sample into the
    full-resolution image ``comp_gan_rgb``, styled by a global code of a 224x224 view (a
    MobileNetV3). A PatchGAN discriminator (``renderer.discriminator``) scores such images.

    In training with ``gt_rgb`` and ``multi_level_guidance`` the generator level is drawn from
    {0, 1, 2}: the style code comes from the render (0) or the target image (1, 2), and at level 2
    the latent from the target image through a local encoder; the full-resolution rays on a
    random stride-8 lattice are rendered too (``comp_int_rgb``, against ``comp_gt_rgb``).
    ``comp_rgb`` is the low-resolution render upsampled to the full size; the base renderer's
    other outputs (opacity, depth, normals, weights) stay at the low resolution."""

    @dataclass
    class Config(VolumeRenderer.Config):
        base_renderer_type: str = ""  # registered name of the volume renderer drawing the field
        base_renderer: Optional[dict] = None  # its config

    cfg: Config

    def configure_renderer(self) -> None:
        self.base_renderer = build_base_renderer(self, "volume renderer")
        self.generator = Decoder(
            ch=64,
            out_ch=3,
            ch_mult=CH_MULT,
            num_res_blocks=1,
            z_channels=Z_CHANNELS,
            temb_channels=STYLE_CHANNELS,
        )
        self.local_encoder = Encoder(
            ch=32, ch_mult=CH_MULT, num_res_blocks=1, in_channels=3, z_channels=Z_CHANNELS
        )
        self.global_encoder = MobileNetV3(n_class=STYLE_CHANNELS)
        self.discriminator = NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3)
        self.discriminator.apply(weights_init)

    @property
    def scale(self) -> int:
        """How many times smaller than the output the base renderer draws."""
        return 2 ** (len(CH_MULT) - 1)

    def forward(
        self,
        rays_o: Float[Tensor, "B H W 3"],
        rays_d: Float[Tensor, "B H W 3"],
        light_positions: Float[Tensor, "B 3"],
        bg_color: Optional[Tensor] = None,
        gt_rgb: Optional[Float[Tensor, "B H W 3"]] = None,
        multi_level_guidance: bool = False,
        **kwargs,
    ) -> Dict[str, Any]:
        B, H, W, _ = rays_o.shape
        if H % self.scale or W % self.scale:
            raise ValueError(
                f"gan-volume-renderer: the image size {H}x{W} must be a multiple of {self.scale}"
            )
        multi_level = gt_rgb is not None and multi_level_guidance
        interleaved = None
        level = 0
        if multi_level:
            # the draws in the established order: level, then the lattice offset (x, y)
            level = int(torch.randint(0, 3, (1,)).item())
            ox = int(torch.randint(0, INTERLEAVE, (1,)).item())
            oy = int(torch.randint(0, INTERLEAVE, (1,)).item())
            interleaved = self.base_renderer(
                rays_o[:, oy::INTERLEAVE, ox::INTERLEAVE],
                rays_d[:, oy::INTERLEAVE, ox::INTERLEAVE],
                light_positions,
                bg_color,
                **kwargs,
            )
            comp_int_rgb = interleaved["comp_rgb"][..., :3]
            comp_gt_rgb = gt_rgb[:, oy::INTERLEAVE, ox::INTERLEAVE]

        def shrink(x: Tensor) -> Tensor:
            return F.interpolate(
                x.permute(0, 3, 1, 2), (H // self.scale, W // self.scale), mode="bilinear"
            ).permute(0, 2, 3, 1)

        out = self.base_renderer(
            shrink(rays_o), shrink(rays_d), light_positions, bg_color, **kwargs
        )
        features = out["comp_rgb"]
        if features.shape[-1] != 3 + 2 * Z_CHANNELS:
            raise ConfigError(
                f"gan-volume-renderer needs {3 + 2 * Z_CHANNELS} rendered channels (RGB, then the "
                f"latent's mean and log-variance), got {features.shape[-1]}: set "
                f"system.geometry.n_feature_dims, system.material.n_output_dims and "
                f"system.background.n_output_dims to {3 + 2 * Z_CHANNELS}"
            )
        lr_rgb = features[..., :3].permute(0, 3, 1, 2)
        out["comp_lr_rgb"] = features[..., :3].clone()
        posterior = DiagonalGaussianDistribution(features[..., 3:].permute(0, 3, 1, 2))
        z_map = posterior.sample() if multi_level_guidance else posterior.mode()

        def style_of(images: Float[Tensor, "B 3 h w"]) -> Float[Tensor, "B S"]:
            return self.global_encoder(F.interpolate(images, (GLOBAL_SIZE, GLOBAL_SIZE)))

        if level == 0:
            style = style_of(lr_rgb)
        else:
            target = gt_rgb.permute(0, 3, 1, 2)
            style = style_of(target)
            if level == 2:
                posterior = DiagonalGaussianDistribution(self.local_encoder(target))
                z_map = posterior.sample()
        comp_gan_rgb = self.generator(torch.cat([lr_rgb, z_map], dim=1), style)

        comp_gan_rgb = F.interpolate(comp_gan_rgb, (H, W), mode="bilinear")
        comp_rgb = F.interpolate(lr_rgb, (H, W), mode="bilinear")
        out.update(
            {
                "posterior": posterior,
                "comp_gan_rgb": comp_gan_rgb.permute(0, 2, 3, 1),
                "comp_rgb": comp_rgb.permute(0, 2, 3, 1),
                "generator_level": level,
            }
        )
        if multi_level:
            out.update({"comp_int_rgb": comp_int_rgb, "comp_gt_rgb": comp_gt_rgb})
        return out
