"""The PatchGAN discriminator of pix2pix: strided 4x4 convolutions to a map of patch logits."""

import torch.nn as nn

from threestudio.utils.typing import Float, Tensor


def weights_init(module: nn.Module) -> None:
    """pix2pix's initialisation (use with ``Module.apply``): convolution weights ~ N(0, 0.02),
    batch-norm scales ~ N(1, 0.02) with zero shifts."""
    name = module.__class__.__name__
    if "Conv" in name:
        nn.init.normal_(module.weight.data, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight.data, 1.0, 0.02)
        nn.init.constant_(module.bias.data, 0)


class NLayerDiscriminator(nn.Module):
    """``n_layers`` stride-2 4x4 convolutions (widths ``ndf * min(2^i, 8)``, batch norm after all
    but the first, LeakyReLU 0.2), one stride-1 convolution, then a 1-channel stride-1
    convolution: ``[B, input_nc, H, W]`` to logits ``[B, 1, H/2^n - 2, W/2^n - 2]`` (an image must
    be at least ``2^n * 3`` pixels on a side: 24 for ``n_layers=3``). ``use_actnorm`` is not
    supported (the established renderer uses batch norm)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, use_actnorm=False):
        super().__init__()
        if use_actnorm:
            raise NotImplementedError("NLayerDiscriminator: use_actnorm is not supported")
        layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            new_width = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            # no bias: the batch norm's shift takes its place
            layers += [
                nn.Conv2d(width, new_width, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(new_width),
                nn.LeakyReLU(0.2, True),
            ]
            width = new_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)

    def forward(self, input: Float[Tensor, "B C H W"]) -> Float[Tensor, "B 1 h w"]:
        return self.main(input)
