"""The convolutional encoder and decoder of the GAN renderer, in the layout of latent
diffusion's autoencoder (residual blocks with group norm and swish, nearest-neighbour
upsampling, strided-convolution downsampling), without attention.

``Decoder`` is the generator: it maps ``[B, 3 + z_channels, h, w]`` (a low-resolution RGB render
and a latent map) to an RGB image ``2^(len(ch_mult) - 1)`` times larger, in [0, 1]; every residual
block adds a projection of a global style code ``temb`` ``[B, temb_channels]``. ``Encoder`` maps
an image to ``2 * z_channels`` channels (mean and log-variance) at the same reduced size."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from threestudio.utils.typing import Float, Optional, Sequence, Tensor


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


def normalize(channels: int) -> nn.GroupNorm:
    # one group without affine parameters: a per-sample layer norm over channels and pixels
    return nn.GroupNorm(num_groups=1, num_channels=channels, eps=1e-6, affine=False)


class ResnetBlock(nn.Module):
    """norm, swish, 3x3 conv (+ projected ``temb``), norm, swish, 3x3 conv, plus a 1x1 shortcut
    when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int = 0):
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels) if temb_channels > 0 else None
        self.norm2 = normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(
        self, x: Float[Tensor, "B Ci H W"], temb: Optional[Float[Tensor, "B T"]] = None
    ) -> Float[Tensor, "B Co H W"]:
        h = self.conv1(swish(self.norm1(x)))
        if temb is not None and self.temb_proj is not None:
            h = h + self.temb_proj(swish(temb))[:, :, None, None]
        h = self.conv2(swish(self.norm2(h)))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class Upsample(nn.Module):
    """2x nearest-neighbour upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H2 W2"]:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """A stride-2 3x3 convolution, padded by one pixel on the right and bottom only."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H2 W2"]:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Encoder(nn.Module):
    """``[B, in_channels, H, W]`` to ``[B, 2 * z_channels (z_channels without double_z), H/f,
    W/f]`` with ``f = 2^(len(ch_mult) - 1)``: per level ``num_res_blocks`` residual blocks to
    width ``ch * ch_mult[level]`` and a downsampling (not after the last), two middle blocks, then
    norm, swish and a 3x3 convolution. The other arguments of the established signature
    (``out_ch``, ``attn_resolutions``, ``dropout``, ``resamp_with_conv``, ``resolution``) are
    accepted; attention resolutions must be empty and dropout 0."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int,
        in_channels: int,
        z_channels: int,
        double_z: bool = True,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        **unused,
    ):
        super().__init__()
        if list(attn_resolutions) or dropout:
            raise NotImplementedError("Encoder: attention and dropout are not supported")
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        self.down = nn.ModuleList()
        for level in range(len(ch_mult)):
            stage = nn.Module()
            blocks = []
            for i in range(num_res_blocks):
                blocks.append(
                    ResnetBlock(widths[level] if i == 0 else widths[level + 1], widths[level + 1])
                )
            stage.block = nn.ModuleList(blocks)
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(widths[level + 1])
            self.down.append(stage)
        width = widths[-1]
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(width, width)
        self.mid.block_2 = ResnetBlock(width, width)
        self.norm_out = normalize(width)
        self.conv_out = nn.Conv2d(width, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: Float[Tensor, "B Ci H W"]) -> Float[Tensor, "B Cz h w"]:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """The generator: ``[B, 3 + z_channels, h, w]`` (RGB first) and a style code ``temb``
    ``[B, temb_channels]`` to an RGB image ``[B, out_ch, h*f, w*f]`` in [0, 1] (sigmoid), with
    ``f = 2^(len(ch_mult) - 1)``. A 3x3 convolution to width ``ch * ch_mult[-1]``, two middle
    residual blocks, then from the coarsest level to the finest ``num_res_blocks + 1`` residual
    blocks to ``ch * ch_mult[level]`` and an upsampling (not after the finest), then norm, swish
    and a 3x3 convolution. Every residual block takes ``temb``. The other arguments of the
    established signature (``in_channels``, ``resolution``, ``attn_resolutions``, ``dropout``,
    ``resamp_with_conv``) are accepted; attention resolutions must be empty and dropout 0."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int,
        z_channels: int,
        temb_channels: int = 64,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        **unused,
    ):
        super().__init__()
        if list(attn_resolutions) or dropout:
            raise NotImplementedError("Decoder: attention and dropout are not supported")
        self.z_channels = z_channels
        width = ch * ch_mult[-1]
        # the low-resolution RGB rides along with the latent
        self.conv_in = nn.Conv2d(z_channels + 3, width, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(width, width, temb_channels)
        self.mid.block_2 = ResnetBlock(width, width, temb_channels)
        self.up = nn.ModuleList([nn.Module() for _ in ch_mult])  # indexed by level
        for level in reversed(range(len(ch_mult))):
            out_width = ch * ch_mult[level]
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(width, out_width, temb_channels))
                width = out_width
            self.up[level].block = nn.ModuleList(blocks)
            if level != 0:
                self.up[level].upsample = Upsample(width)
        self.norm_out = normalize(width)
        self.conv_out = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(
        self, z: Float[Tensor, "B Cz h w"], temb: Optional[Float[Tensor, "B T"]] = None
    ) -> Float[Tensor, "B Co H W"]:
        if z.shape[1] != self.z_channels + 3:
            raise ValueError(
                f"Decoder expects {self.z_channels + 3} input channels (RGB + latent), "
                f"got {z.shape[1]}"
            )
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.block_1(h, temb), temb)
        for level in reversed(range(len(self.up))):
            for block in self.up[level].block:
                h = block(h, temb)
            if level != 0:
                h = self.up[level].upsample(h)
        return torch.sigmoid(self.conv_out(swish(self.norm_out(h))))
