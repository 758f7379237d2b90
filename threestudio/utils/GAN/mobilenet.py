"""MobileNetV3 (Howard et al. 2019) as an image-to-vector encoder: the GAN renderer's global
encoder, which turns a 224x224 view into the generator's style code (``n_class`` values)."""

import math

import torch.nn as nn
import torch.nn.functional as F

from threestudio.utils.typing import Float, Tensor

# (kernel, expansion width, output width, squeeze-excite, nonlinearity, stride): Tables 1 and 2
# of the paper
SETTINGS = {
    "large": [
        (3, 16, 16, False, "RE", 1),
        (3, 64, 24, False, "RE", 2),
        (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2),
        (5, 120, 40, True, "RE", 1),
        (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2),
        (3, 200, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 480, 112, True, "HS", 1),
        (3, 672, 112, True, "HS", 1),
        (5, 672, 160, True, "HS", 2),
        (5, 960, 160, True, "HS", 1),
        (5, 960, 160, True, "HS", 1),
    ],
    "small": [
        (3, 16, 16, True, "RE", 2),
        (3, 72, 24, False, "RE", 2),
        (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2),
        (5, 240, 40, True, "HS", 1),
        (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1),
        (5, 144, 48, True, "HS", 1),
        (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1),
        (5, 576, 96, True, "HS", 1),
    ],
}
LAST_CONV = {"large": 960, "small": 576}


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class HardSwish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class HardSigmoid(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x + 3.0) / 6.0


def activation(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "RE" else HardSwish()


class SqueezeExcite(nn.Module):
    """Channel gates from the pooled features (bottleneck by ``reduction``, hard sigmoid)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            HardSigmoid(),
        )

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H W"]:
        gates = self.fc(x.mean(dim=(2, 3)))
        return x * gates[:, :, None, None]


class MobileBottleneck(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise ``kernel`` convolution (optionally gated by
    squeeze-excite), 1x1 projection; a residual connection when shape is kept."""

    def __init__(self, inp: int, oup: int, kernel: int, stride: int, exp: int, se: bool, nl: str):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, exp, 1, bias=False),
            nn.BatchNorm2d(exp),
            activation(nl),
            nn.Conv2d(exp, exp, kernel, stride, (kernel - 1) // 2, groups=exp, bias=False),
            nn.BatchNorm2d(exp),
            SqueezeExcite(exp) if se else nn.Identity(),
            activation(nl),
            nn.Conv2d(exp, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV3(nn.Module):
    """``[B, 3, H, W]`` to ``[B, n_class]``: a stride-2 stem, the bottlenecks of ``mode``
    ("small" or "large"), a 1x1 convolution, global pooling, a 1x1 convolution to
    ``last_channel`` (1280) with hard swish, dropout and a linear layer. Randomly initialised
    (Kaiming for convolutions, N(0, 0.01) for the linear layer)."""

    def __init__(
        self,
        n_class: int = 1000,
        input_size: int = 224,
        dropout: float = 0.0,
        mode: str = "small",
        width_mult: float = 1.0,
    ):
        super().__init__()
        if mode not in SETTINGS:
            raise ValueError(f"MobileNetV3: mode must be 'small' or 'large', got '{mode}'")
        if input_size % 32 != 0:
            raise ValueError(f"MobileNetV3: input_size must be a multiple of 32, got {input_size}")
        last_channel = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        channels = 16
        layers = [
            nn.Sequential(
                nn.Conv2d(3, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels), HardSwish()
            )
        ]
        for kernel, exp, out, se, nl, stride in SETTINGS[mode]:
            out_channels = make_divisible(out * width_mult)
            layers.append(
                MobileBottleneck(
                    channels, out_channels, kernel, stride, make_divisible(exp * width_mult), se, nl
                )
            )
            channels = out_channels
        last_conv = make_divisible(LAST_CONV[mode] * width_mult)
        layers += [
            nn.Sequential(
                nn.Conv2d(channels, last_conv, 1, bias=False),
                nn.BatchNorm2d(last_conv),
                HardSwish(),
            ),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(last_conv, last_channel, 1),
            HardSwish(),
        ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, n_class))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B N"]:
        return self.classifier(self.features(x).mean(dim=(2, 3)))
