"""Encodings and MLPs, configured with tiny-cuda-nn's vocabulary (``otype: HashGrid`` ...):
``get_encoding`` and ``get_mlp`` build them from a config.

The hash grid and its tiny-cuda-nn backend live in ``threestudio.kernels.hash_grid``; everything
here is pure PyTorch. Encodings expect inputs in [0, 1].
"""

import math

import torch
import torch.nn as nn

import threestudio
from threestudio.kernels.backend import report_fallback, tinycudann
from threestudio.kernels.hash_grid import (  # noqa: F401 - re-exported: the established paths
    HashGrid,
    HashGridEncoding,
    HashGridLayout,
    TorchHashGrid,
    make_hash_grid,
    use_tcnn,
)
from threestudio.utils.base import Updateable
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError, did_you_mean
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Float, Tensor


class ProgressiveBandFrequency(nn.Module, Updateable):
    """Sin/cos positional encoding; with ``n_masking_step > 0`` bands are faded in over steps."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.N_freqs = config["n_frequencies"]
        self.in_channels, self.n_input_dims = in_channels, in_channels
        self.funcs = [torch.sin, torch.cos]
        self.freq_bands = 2 ** torch.linspace(0, self.N_freqs - 1, self.N_freqs)
        self.n_output_dims = self.in_channels * (len(self.funcs) * self.N_freqs)
        self.n_masking_step = config.get("n_masking_step", 0)
        self.update_step(None, None)  # mask starts all ones when there is no masking

    def forward(self, x: Float[Tensor, "*N Di"]) -> Float[Tensor, "*N Do"]:
        out = []
        for freq, mask in zip(self.freq_bands, self.mask):
            for func in self.funcs:
                out += [func(freq * x) * mask]
        return torch.cat(out, -1)

    def update_step(self, epoch, global_step, on_load_weights=False):
        if self.n_masking_step <= 0 or global_step is None:
            self.mask = torch.ones(self.N_freqs, dtype=torch.float32)
        else:
            self.mask = (
                1.0
                - torch.cos(
                    math.pi
                    * (
                        global_step / self.n_masking_step * self.N_freqs
                        - torch.arange(0, self.N_freqs)
                    ).clamp(0, 1)
                )
            ) / 2.0


class FrequencyEncoding(nn.Module):
    """``otype: Frequency`` with tcnn's semantics: for each input dim, for each frequency k,
    ``sin(2^k * pi * x)`` then ``cos(2^k * pi * x)``."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.n_input_dims = in_channels
        self.n_frequencies = int(config.get("n_frequencies", 12))
        self.n_output_dims = in_channels * self.n_frequencies * 2
        freqs = math.pi * 2.0 ** torch.arange(self.n_frequencies, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: Float[Tensor, "*B Di"]) -> Float[Tensor, "*B Do"]:
        phase = x.unsqueeze(-1) * self.freqs.to(x.dtype)  # [*B, Di, K]
        out = torch.stack([torch.sin(phase), torch.cos(phase)], dim=-1)  # [*B, Di, K, 2]
        return out.reshape(*x.shape[:-1], self.n_output_dims)


class ProgressiveBandHashGrid(nn.Module, Updateable):
    """Hash grid whose finer levels are switched on one at a time during training."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.n_input_dims = in_channels
        self.encoding = HashGridEncoding(in_channels, config)
        self.n_output_dims = self.encoding.n_output_dims
        self.n_level = self.encoding.layout.n_levels
        self.n_features_per_level = self.encoding.layout.n_features
        self.start_level = int(config["start_level"])
        self.start_step = int(config["start_step"])
        self.update_steps = int(config["update_steps"])
        self.current_level = min(self.start_level, self.n_level)
        self.mask = torch.zeros(self.n_level * self.n_features_per_level, dtype=torch.float32)
        self.mask[: self.current_level * self.n_features_per_level] = 1.0

    def forward(self, x: Float[Tensor, "*B Di"]) -> Float[Tensor, "*B Do"]:
        enc = self.encoding(x)
        return enc * self.mask.to(enc)

    def update_step(self, epoch, global_step, on_load_weights=False):
        if global_step is None:
            return
        current_level = min(
            self.start_level + max(global_step - self.start_step, 0) // self.update_steps,
            self.n_level,
        )
        if current_level > self.current_level:
            threestudio.debug(f"Update current level to {current_level}")
        self.current_level = current_level
        self.mask[: self.current_level * self.n_features_per_level] = 1.0


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics of a direction in [0, 1]^3 (tcnn convention), degree 1-4."""

    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.n_input_dims = in_channels
        self.degree = config["degree"]
        if not 1 <= self.degree <= 4:
            raise ConfigError(f"SphericalHarmonics degree must be 1-4, got {self.degree}")
        self.n_output_dims = self.degree**2

    def forward(self, d):
        d = d * 2 - 1
        x, y, z = d[..., 0], d[..., 1], d[..., 2]
        xx, yy, zz = x * x, y * y, z * z
        out = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
        if self.degree > 2:
            out += [
                1.0925484305920792 * x * y,
                -1.0925484305920792 * y * z,
                0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * x * z,
                0.54627421529603959 * (xx - yy),
            ]
        if self.degree > 3:
            out += [
                0.59004358992664352 * y * (-3.0 * xx + yy),
                2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz),
                0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz),
                1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy),
            ]
        return torch.stack(out, -1)


class IdentityEncoding(nn.Module):
    def __init__(self, in_channels: int, config: dict):
        super().__init__()
        self.n_input_dims = self.n_output_dims = in_channels

    def forward(self, x):
        return x


class CompositeEncoding(nn.Module, Updateable):
    """Concatenate raw (rescaled) inputs to an encoding: ``include_xyz``."""

    def __init__(self, encoding, include_xyz=False, xyz_scale=2.0, xyz_offset=-1.0):
        super().__init__()
        self.encoding = encoding
        self.include_xyz, self.xyz_scale, self.xyz_offset = include_xyz, xyz_scale, xyz_offset
        self.n_output_dims = int(self.include_xyz) * self.encoding.n_input_dims + (
            self.encoding.n_output_dims
        )

    def forward(self, x, *args):
        if not self.include_xyz:
            return self.encoding(x, *args)
        return torch.cat([x * self.xyz_scale + self.xyz_offset, self.encoding(x, *args)], dim=-1)


ENCODINGS = {
    "HashGrid": make_hash_grid,
    "ProgressiveBandHashGrid": ProgressiveBandHashGrid,
    "Frequency": FrequencyEncoding,
    "ProgressiveBandFrequency": ProgressiveBandFrequency,
    "SphericalHarmonics": SphericalHarmonics,
    "Identity": IdentityEncoding,
}


def get_encoding(n_input_dims: int, config) -> nn.Module:
    """Build an encoding from a tcnn-style config; inputs are expected in [0, 1]."""
    config = config_to_primitive(config)
    otype = config.get("otype")
    if otype not in ENCODINGS:
        raise ConfigError(f"unknown encoding otype '{otype}'{did_you_mean(str(otype), ENCODINGS)}")
    encoding = ENCODINGS[otype](n_input_dims, config)
    return CompositeEncoding(
        encoding,
        include_xyz=config.get("include_xyz", False),
        xyz_scale=2.0,
        xyz_offset=-1.0,
    )


HIDDEN_ACTIVATIONS = {  # tcnn's activation names (lower-cased) -> module factories
    "relu": lambda: nn.ReLU(inplace=True),
    "none": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "leakyrelu": lambda: nn.LeakyReLU(0.01),
}


class VanillaMLP(nn.Module):
    """Bias-free MLP with PyTorch's default initialisation. Subclasses change how a layer is made
    (``make_linear``, ``make_activation``) and which options they read (``read_options``)."""

    def __init__(self, dim_in: int, dim_out: int, config: dict):
        super().__init__()
        self.n_neurons, self.n_hidden_layers = config["n_neurons"], config["n_hidden_layers"]
        self.read_options(config)
        layers = [self.make_linear(dim_in, self.n_neurons, is_first=True, is_last=False)]
        layers.append(self.make_activation())
        for _ in range(self.n_hidden_layers - 1):
            layers += [
                self.make_linear(self.n_neurons, self.n_neurons, is_first=False, is_last=False),
                self.make_activation(),
            ]
        layers.append(self.make_linear(self.n_neurons, dim_out, is_first=False, is_last=True))
        self.layers = nn.Sequential(*layers)
        self.output_activation = get_activation(config.get("output_activation", None))

    def read_options(self, config: dict) -> None:
        """The options ``make_linear``/``make_activation`` use; read before any layer is made."""
        self.activation = str(config.get("activation", "ReLU")).lower()
        if self.activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(
                f"unknown MLP activation '{config['activation']}'"
                f"{did_you_mean(self.activation, HIDDEN_ACTIVATIONS)}"
            )

    def forward(self, x):
        # disable autocast: with it, parameters of this MLP receive no gradients (a known
        # problem of the original implementation under 16-mixed precision)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.layers(x.float())
            x = self.output_activation(x)
        return x

    def make_linear(self, dim_in, dim_out, is_first, is_last):
        return nn.Linear(dim_in, dim_out, bias=False)

    def make_activation(self):
        return HIDDEN_ACTIVATIONS[self.activation]()


class SphereInitVanillaMLP(VanillaMLP):
    """MLP with biases, weight norm and softplus(beta=100), initialised so that its output
    approximates the SDF of a sphere (geometric init); ``activation`` is not read."""

    def read_options(self, config: dict) -> None:
        self.sphere_init, self.weight_norm = True, True
        self.sphere_init_radius = config["sphere_init_radius"]
        self.sphere_init_inside_out = config.get("inside_out", False)

    def make_linear(self, dim_in, dim_out, is_first, is_last):
        layer = nn.Linear(dim_in, dim_out, bias=True)
        if is_last:
            if not self.sphere_init_inside_out:
                torch.nn.init.constant_(layer.bias, -self.sphere_init_radius)
                torch.nn.init.normal_(
                    layer.weight, mean=math.sqrt(math.pi) / math.sqrt(dim_in), std=0.0001
                )
            else:
                torch.nn.init.constant_(layer.bias, self.sphere_init_radius)
                torch.nn.init.normal_(
                    layer.weight, mean=-math.sqrt(math.pi) / math.sqrt(dim_in), std=0.0001
                )
        elif is_first:
            torch.nn.init.constant_(layer.bias, 0.0)
            torch.nn.init.constant_(layer.weight[:, 3:], 0.0)
            torch.nn.init.normal_(layer.weight[:, :3], 0.0, math.sqrt(2) / math.sqrt(dim_out))
        else:
            torch.nn.init.constant_(layer.bias, 0.0)
            torch.nn.init.normal_(layer.weight, 0.0, math.sqrt(2) / math.sqrt(dim_out))
        if self.weight_norm:
            layer = nn.utils.parametrizations.weight_norm(layer)
        return layer

    def make_activation(self):
        return nn.Softplus(beta=100)


TCNN_MLP_ALIGNMENT = 16  # tcnn pads an MLP's input and output widths to multiples of 16


def _next_multiple(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


class FusedMLP(VanillaMLP):
    """``otype: FullyFusedMLP`` / ``CutlassMLP``: tiny-cuda-nn's MLPs, run as the same bias-free
    architecture in pure PyTorch (there is no tcnn backend for MLPs here; the state-dict keys are
    VanillaMLP's).

    Initialised as tcnn initialises them: every weight matrix uniform in ``[-b, b]`` with
    ``b = sqrt(6 / (fan_in + fan_out))`` (Xavier-uniform), where tcnn's fans are its padded
    widths: the input layer's ``fan_in`` and the output layer's ``fan_out`` rounded up to a
    multiple of 16.
    """

    def __init__(self, dim_in: int, dim_out: int, config: dict):
        otype = str(config.get("otype"))
        if tinycudann() is None:
            reason = "tinycudann is not installed or does not load"
        else:
            reason = "threestudio has no tiny-cuda-nn MLP backend"
        report_fallback(otype, "tiny-cuda-nn's MLP", reason)
        super().__init__(dim_in, dim_out, config)

    def make_linear(self, dim_in, dim_out, is_first, is_last):
        layer = nn.Linear(dim_in, dim_out, bias=False)
        fan_in = _next_multiple(dim_in, TCNN_MLP_ALIGNMENT) if is_first else dim_in
        fan_out = _next_multiple(dim_out, TCNN_MLP_ALIGNMENT) if is_last else dim_out
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(layer.weight, -bound, bound)
        return layer


NETWORKS = {
    "VanillaMLP": VanillaMLP,
    "FullyFusedMLP": FusedMLP,
    "CutlassMLP": FusedMLP,
    "SphereInitVanillaMLP": SphereInitVanillaMLP,
}


def get_mlp(n_input_dims: int, n_output_dims: int, config) -> nn.Module:
    config = config_to_primitive(config)
    otype = config.get("otype")
    if otype not in NETWORKS:
        raise ConfigError(f"unknown network otype '{otype}'{did_you_mean(str(otype), NETWORKS)}")
    return NETWORKS[otype](n_input_dims, n_output_dims, config)


class NetworkWithInputEncoding(nn.Module, Updateable):
    def __init__(self, encoding, network):
        super().__init__()
        self.encoding, self.network = encoding, network

    def forward(self, x):
        return self.network(self.encoding(x))


def create_network_with_input_encoding(
    n_input_dims: int, n_output_dims: int, encoding_config, network_config
) -> nn.Module:
    encoding = get_encoding(n_input_dims, encoding_config)
    network = get_mlp(encoding.n_output_dims, n_output_dims, network_config)
    return NetworkWithInputEncoding(encoding, network)
