"""LPIPS perceptual loss with a VGG16 backbone, without torchvision.

``PerceptualLoss(use_dropout=True)`` behaves as the established ``threestudio.utils.perceptual``
one: inputs ``[B, 3, H, W]`` in [-1, 1] are shifted and scaled as LPIPS does, VGG16 features are
taken at ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3``, normalised over channels, their squared
differences weighted by learned 1x1 linear layers, averaged over space and summed over the layers;
the result is ``[B, 1, 1, 1]``. Every parameter is frozen.

The VGG16 stack is written here with the layer layout of torchvision's ``vgg16().features``, so
torchvision's weights file (``features.N.weight``), timm's ``vgg16.tv_in1k`` and a bare
``features`` state dict load as they are. Weights come from, in order: the arguments (or the
``perceptual-loss`` module's config keys), the environment variables ``THREESTUDIO_VGG16_WEIGHTS``
and ``THREESTUDIO_LPIPS_WEIGHTS``, then the hub files below. Each is a local file (``.pth``, ``.pt``,
``.bin``, ``.safetensors``) or ``owner/name:filename`` on the Hugging Face Hub. When a file is
neither on disk nor downloadable, one ``MissingModelError`` line names it and how to provide it.
"""

import os
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

import threestudio
from threestudio.utils.base import BaseModule
from threestudio.utils.errors import MissingModelError, UserError
from threestudio.utils.typing import Dict, Float, List, Optional, Tensor, Tuple

# torchvision's original ImageNet weights, as published by timm (keys features.N.*)
DEFAULT_VGG16_WEIGHTS = "timm/vgg16.tv_in1k:model.safetensors"
# LPIPS v0.1 linear layers for VGG (the lpips package's weights/v0.1/vgg.pth, same SHA-256)
DEFAULT_LPIPS_WEIGHTS = "chaofengc/IQA-PyTorch-Weights:LPIPS_v0.1_vgg-a78928a0.pth"

VGG16_ENV = "THREESTUDIO_VGG16_WEIGHTS"
LPIPS_ENV = "THREESTUDIO_LPIPS_WEIGHTS"

# torchvision's VGG16 configuration "D": conv widths, "M" for a 2x2 max pool
VGG16_LAYOUT = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
# LPIPS taps the features after these indices of vgg16().features (relu1_2 ... relu5_3)
LPIPS_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    """The 31 layers of torchvision's ``vgg16().features`` (same indices, same state_dict keys),
    randomly initialised."""
    layers: List[nn.Module] = []
    in_channels = 3
    for width in VGG16_LAYOUT:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(True)]
            in_channels = width
    return nn.Sequential(*layers)


class ScalingLayer(nn.Module):
    """LPIPS's input normalisation for images in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, inp: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
        return (inp - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """A 1x1 convolution to one channel (after dropout, with ``use_dropout``)."""

    def __init__(self, chn_in: int, chn_out: int = 1, use_dropout: bool = False):
        super().__init__()
        layers: List[nn.Module] = [nn.Dropout()] if use_dropout else []
        layers.append(nn.Conv2d(chn_in, chn_out, 1, stride=1, padding=0, bias=False))
        self.model = nn.Sequential(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self.model[-1]


class VGG16Slices(nn.Module):
    """``vgg16().features`` cut where LPIPS reads it; ``sliceK.N`` is layer N of the features."""

    def __init__(self, features: Optional[nn.Sequential] = None):
        super().__init__()
        features = vgg16_features() if features is None else features
        for k, (start, end) in enumerate(LPIPS_SLICES, 1):
            block = nn.Sequential()
            for i in range(start, end):
                block.add_module(str(i), features[i])
            setattr(self, f"slice{k}", block)

    def forward(self, x: Float[Tensor, "B 3 H W"]) -> List[Float[Tensor, "B C h w"]]:
        outs = []
        for k in range(1, len(LPIPS_SLICES) + 1):
            x = getattr(self, f"slice{k}")(x)
            outs.append(x)
        return outs


def normalize_tensor(x: Float[Tensor, "B C H W"], eps: float = 1e-10) -> Float[Tensor, "B C H W"]:
    """Unit length over channels at every pixel."""
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)


def spatial_average(x: Float[Tensor, "B C H W"], keepdim: bool = True) -> Tensor:
    return x.mean([2, 3], keepdim=keepdim)


# ---------- weights ----------

_BACKBONE_KEY = re.compile(r"(?:^|\.)(?:features|slice[1-5])\.(\d+)\.(weight|bias)$")
_BARE_BACKBONE_KEY = re.compile(r"^(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"(?:^|\.)lin([0-4])\.(?:model\.\d+\.)?weight$")
_HUB_SPEC = re.compile(r"^([\w.-]+/[\w.-]+):([^/\\:]+)$")


def _is_hub_spec(spec: str) -> bool:
    return not os.path.exists(os.path.expanduser(spec)) and _HUB_SPEC.match(spec) is not None


def _read_state_dict(path: str, wanted) -> Dict[str, Tensor]:
    """The tensors of the file at ``path`` whose key ``wanted(key)`` accepts (a checkpoint's
    ``state_dict`` is looked into)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys() if wanted(k)}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old-format (non-zip) file cannot be memory-mapped
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UserError(f"weights file {path} does not hold a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor) and wanted(k)}


def _fetch(spec: str, what: str, how: str) -> Tuple[Optional[str], Optional[str]]:
    """(local path, None), or (None, a sentence saying why ``spec`` is missing and ``how`` to
    pass a local file instead)."""
    match = _HUB_SPEC.match(spec) if _is_hub_spec(spec) else None
    if match is None:
        path = os.path.expanduser(spec)
        if os.path.isfile(path):
            return path, None
        return None, f"the {what} file '{spec}' does not exist: pass one with {how}."
    from huggingface_hub import hf_hub_download

    repo, filename = match.groups()
    try:
        return hf_hub_download(repo, filename), None
    except Exception as e:  # offline cache miss, no network, unknown repo or file
        return None, (
            f"the {what} '{spec}' are not downloaded and could not be fetched "
            f"({type(e).__name__}): download them while online "
            f"(`hf download {repo} {filename}`) or pass a local file with {how}."
        )


class PerceptualLoss(nn.Module):
    """LPIPS (VGG16) distance between two image batches in [-1, 1], ``[B, 1, 1, 1]``.

    ``vgg_weights``/``lpips_weights``: a local file or ``owner/name:filename`` on the hub
    (default: ``$THREESTUDIO_VGG16_WEIGHTS``/``$THREESTUDIO_LPIPS_WEIGHTS``, else the hub files
    ``DEFAULT_VGG16_WEIGHTS``/``DEFAULT_LPIPS_WEIGHTS``). ``random_weights`` skips loading (for
    tests). ``key_hint``: the config prefix of the keys that set them (``""`` at top level), named
    in a missing-weights error; ``None`` names only the environment variables."""

    def __init__(
        self,
        use_dropout: bool = True,
        vgg_weights: Optional[str] = None,
        lpips_weights: Optional[str] = None,
        random_weights: bool = False,
        key_hint: Optional[str] = None,
    ):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.chns = list(LPIPS_CHANNELS)
        self.net = VGG16Slices()
        for k, channels in enumerate(self.chns):
            setattr(self, f"lin{k}", NetLinLayer(channels, use_dropout=use_dropout))
        if not random_weights:
            self.load_pretrained(vgg_weights, lpips_weights, key_hint=key_hint)
        for param in self.parameters():
            param.requires_grad = False

    @classmethod
    def from_pretrained(cls, name: str = "vgg_lpips") -> "PerceptualLoss":
        if name != "vgg_lpips":
            raise UserError(f"PerceptualLoss: unknown pretrained name '{name}' (only 'vgg_lpips')")
        return cls()

    @property
    def lins(self) -> List[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(self.chns))]

    def load_pretrained(
        self,
        vgg_weights: Optional[str] = None,
        lpips_weights: Optional[str] = None,
        key_hint: Optional[str] = None,
    ) -> None:
        specs = {
            "vgg": vgg_weights or os.environ.get(VGG16_ENV) or DEFAULT_VGG16_WEIGHTS,
            "lpips": lpips_weights or os.environ.get(LPIPS_ENV) or DEFAULT_LPIPS_WEIGHTS,
        }
        paths, missing = {}, []
        for part, what, env, example in [
            ("vgg", "VGG16 backbone weights", VGG16_ENV, "vgg16.pth"),
            ("lpips", "LPIPS linear-layer weights", LPIPS_ENV, "lpips_vgg.pth"),
        ]:
            how = f"{env}=/path/to/{example}"
            if key_hint is not None:
                key = f"{key_hint}.{part}_weights" if key_hint else f"{part}_weights"
                how = f"{key}=/path/to/{example} (or {env})"
            paths[part], why = _fetch(specs[part], what, how)
            if why is not None:
                missing.append(why)
        if missing:
            raise MissingModelError("perceptual loss: " + " Also ".join(missing))
        self.load_backbone(_read_state_dict(paths["vgg"], _backbone_name), source=paths["vgg"])
        lins = _read_state_dict(paths["lpips"], lambda k: _lin_index(k) is not None)
        self.load_linear_layers(lins, source=paths["lpips"])
        threestudio.debug(
            f"perceptual loss: VGG16 from {paths['vgg']}, LPIPS from {paths['lpips']}"
        )

    def load_backbone(self, state_dict: Dict[str, Tensor], source: str = "state dict") -> None:
        """Load VGG16 feature weights keyed as torchvision's (``features.N.weight`` or
        ``N.weight``) or as this module's (``net.sliceK.N.weight``); other keys are ignored."""
        found = {_backbone_name(k): v for k, v in state_dict.items() if _backbone_name(k)}
        own = dict(self.net.named_parameters())
        targets = {name.split(".", 1)[1]: p for name, p in own.items()}  # "N.weight" -> param
        absent = [name for name in targets if name not in found]
        if absent:
            raise UserError(
                f"{source} is not a VGG16 weights file: it lacks features.{absent[0]} "
                f"({len(absent)} of {len(targets)} VGG16 feature tensors missing)"
            )
        with torch.no_grad():
            for name, param in targets.items():
                _check_shape(found[name], param, f"features.{name}", source, "VGG16")
                param.copy_(found[name])

    def load_linear_layers(self, state_dict: Dict[str, Tensor], source: str = "state dict") -> None:
        """Load LPIPS's five 1x1 layers keyed ``linK.model.I.weight`` (as LPIPS saves them)."""
        found = {_lin_index(k): v for k, v in state_dict.items() if _lin_index(k) is not None}
        absent = [k for k in range(len(self.chns)) if k not in found]
        if absent:
            raise UserError(
                f"{source} is not an LPIPS VGG weights file: it lacks lin{absent[0]}.model.1.weight"
            )
        with torch.no_grad():
            for k, lin in enumerate(self.lins):
                _check_shape(found[k], lin.conv.weight, f"lin{k}", source, "LPIPS (VGG)")
                lin.conv.weight.copy_(found[k])

    def forward(
        self, input: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]
    ) -> Float[Tensor, "B 1 1 1"]:
        outs0 = self.net(self.scaling_layer(input))
        outs1 = self.net(self.scaling_layer(target))
        val = 0
        for lin, f0, f1 in zip(self.lins, outs0, outs1):
            diff = (normalize_tensor(f0) - normalize_tensor(f1)) ** 2
            val = val + spatial_average(lin.model(diff), keepdim=True)
        return val


def _backbone_name(key: str) -> Optional[str]:
    match = _BACKBONE_KEY.search(key) or _BARE_BACKBONE_KEY.match(key)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _lin_index(key: str) -> Optional[int]:
    match = _LIN_KEY.search(key)
    return int(match.group(1)) if match else None


def _check_shape(value: Tensor, param: Tensor, key: str, source: str, what: str) -> None:
    if value.shape != param.shape:
        raise UserError(
            f"{source}: {key} has shape {tuple(value.shape)} but {what} needs {tuple(param.shape)}"
        )


@threestudio.register("perceptual-loss")
class PerceptualLossModule(BaseModule):
    """The registered ``perceptual-loss``: ``PerceptualLoss`` configured from a config."""

    @dataclass
    class Config(BaseModule.Config):
        use_dropout: bool = True
        # a local file or owner/name:filename on the hub; None: $THREESTUDIO_VGG16_WEIGHTS /
        # $THREESTUDIO_LPIPS_WEIGHTS, else DEFAULT_VGG16_WEIGHTS / DEFAULT_LPIPS_WEIGHTS
        vgg_weights: Optional[str] = None
        lpips_weights: Optional[str] = None
        # build with random weights (tests); also implied by `weights`, which loads after
        random_weights: bool = False

    cfg: Config

    def configure(self) -> None:
        full_key = self.cfg._get_full_key("vgg_weights")  # system.perceptual_loss.vgg_weights
        self.loss = PerceptualLoss(
            use_dropout=self.cfg.use_dropout,
            vgg_weights=self.cfg.vgg_weights,
            lpips_weights=self.cfg.lpips_weights,
            random_weights=self.cfg.random_weights or self.cfg.weights is not None,
            key_hint=full_key.rsplit(".", 1)[0] if "." in full_key else "",
        )

    def forward(
        self, input: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]
    ) -> Float[Tensor, "B 1 1 1"]:
        return self.loss(input, target)


__all__ = ["PerceptualLoss", "PerceptualLossModule", "vgg16_features"]
