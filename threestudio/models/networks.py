"""Encodings and MLPs, configured with tiny-cuda-nn's vocabulary (``otype: HashGrid`` ...).

Pure-PyTorch implementations are always available; the tiny-cuda-nn backend is used for the hash
grid when ``tinycudann`` imports and the input is on CUDA (``use_tcnn``, the one place that
decides). Both backends share the flat ``params`` layout of tcnn and produce the same outputs.
Encodings expect inputs in [0, 1].
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.utils.base import Updateable
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError, did_you_mean
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Dict, Float, Int, List, Optional, Tensor, Tuple


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


# ---------------------------------------------------------------------------------------------
# Backend choice: the only place that decides between tiny-cuda-nn and pure PyTorch.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _tinycudann():
    """The ``tinycudann`` module, or None when it is not installed or cannot load."""
    try:
        import tinycudann  # noqa: PLC0415 - CUDA-only extension, imported lazily on purpose
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA install
        return None
    return tinycudann


def use_tcnn(x: Tensor) -> bool:
    """Run on tiny-cuda-nn when it imports and the input lives on a CUDA device."""
    return x.is_cuda and _tinycudann() is not None


# ---------------------------------------------------------------------------------------------
# Multiresolution hash grid (Instant-NGP), parameter layout and semantics of tiny-cuda-nn
# ---------------------------------------------------------------------------------------------

# tcnn's coherent prime hash: dimension 0 is multiplied by 1, so x-neighbours stay close in memory
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429)


def _as_int32(value: int) -> int:
    """The int32 with the same 32 bits as the uint32 ``value`` (multiplication wraps alike)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


@dataclass(frozen=True)
class HashGridLayout:
    """Where each level lives in the flat parameter vector, computed exactly as tcnn does."""

    n_input_dims: int
    n_features: int
    scales: Tuple[float, ...]  # pos = x * scale + 0.5
    resolutions: Tuple[int, ...]  # grid vertices per axis: ceil(scale) + 1
    sizes: Tuple[int, ...]  # table entries of each level
    offsets: Tuple[int, ...]  # first table entry of each level; offsets[-1] is the total
    dense: Tuple[bool, ...]  # True where the whole grid fits the level's table (no hashing)

    @classmethod
    def from_config(cls, n_input_dims: int, config: dict) -> "HashGridLayout":
        n_levels = int(config.get("n_levels", 16))
        n_features = int(config.get("n_features_per_level", 2))
        log2_size = int(config.get("log2_hashmap_size", 19))
        base_resolution = int(config.get("base_resolution", 16))
        per_level_scale = float(config.get("per_level_scale", 2.0))
        if n_input_dims > len(HASH_PRIMES):
            raise ConfigError(f"HashGrid supports at most 4 input dims, got {n_input_dims}")
        # float32 arithmetic like tcnn's grid_scale(), so table sizes agree bit for bit
        log2_scale = np.log2(np.float32(per_level_scale))
        scales, resolutions, sizes, offsets, dense = [], [], [], [0], []
        for level in range(n_levels):
            scale = np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution)
            scale = float(np.float32(scale) - np.float32(1.0))
            resolution = int(math.ceil(scale)) + 1
            n_dense = resolution**n_input_dims
            size = min(int(math.ceil(n_dense / 8) * 8), 2**log2_size)
            scales.append(scale)
            resolutions.append(resolution)
            sizes.append(size)
            dense.append(n_dense <= size)
            offsets.append(offsets[-1] + size)
        return cls(
            n_input_dims, n_features, tuple(scales), tuple(resolutions), tuple(sizes),
            tuple(offsets), tuple(dense),
        )  # fmt: skip

    @property
    def n_levels(self) -> int:
        return len(self.scales)

    @property
    def n_params(self) -> int:
        return self.offsets[-1] * self.n_features


class HashGridTensors:
    """Per-level constants, built once per device. Every level is processed on its own (its
    temporaries stay cache-sized); a level's indices are relative to its own table
    (``offsets[level]`` entries into ``params``)."""

    def __init__(self, layout: HashGridLayout, device: torch.device):
        d = layout.n_input_dims
        assert layout.offsets[-1] < 2**31, "hash grid too large for int32 indices"
        self.device = device
        self.dense = layout.dense
        self.sizes = layout.sizes
        self.offsets = layout.offsets[:-1]
        self.scales = layout.scales
        # python ints: dense levels use row-major strides (x + y * res + z * res^2), hashed ones
        # tcnn's primes as int32 (multiplication wraps like tcnn's uint32 arithmetic, and the low
        # bits, all that the power-of-two mask keeps, agree)
        self.multipliers: List[List[int]] = [
            [layout.resolutions[level] ** i for i in range(d)]
            if layout.dense[level]
            else [_as_int32(p) for p in HASH_PRIMES[:d]]
            for level in range(layout.n_levels)
        ]
        self.corner_bits = torch.arange(2, dtype=torch.int32, device=device)
        self.sign = torch.tensor([-1.0, 1.0], device=device)
        self.n_entries = layout.offsets[-1]

    def level_table(self, table: Tensor, level: int) -> Tensor:
        return table[self.offsets[level] : self.offsets[level] + self.sizes[level]]

    def global_index(self, index: Int[Tensor, "L N C"]) -> Int[Tensor, "L N C"]:
        """Indices into the whole table (int64), for callers outside the fast path."""
        offsets = torch.tensor(self.offsets, dtype=torch.long, device=index.device)
        return index.long() + offsets.view(-1, *([1] * (index.dim() - 1)))


def _combine_corners(terms: List[Tensor], op, out: Optional[Tensor] = None) -> Tensor:
    """``[..., 2]`` per-axis terms -> ``[..., 2, ..., 2]``, one entry per corner; corner bit ``i``
    (counted from the last axis of the result) belongs to input axis ``i``."""
    d = len(terms)
    result = None
    for i, term in enumerate(terms):
        shape = term.shape[:-1] + tuple(2 if j == d - 1 - i else 1 for j in range(d))
        term = term.view(shape)
        if result is None:
            result = term
        elif i == d - 1 and out is not None:
            result = op(result, term, out=out.view(out.shape[:-1] + (2,) * d))
        else:
            result = op(result, term)
    return result


def _level_indices_and_weights(
    x: Float[Tensor, "N D"],
    level: int,
    consts: HashGridTensors,
    index: Int[Tensor, "N C"],
    weights: Float[Tensor, "N C"],
    axis_weights: Float[Tensor, "N D 2"],
) -> None:
    """Fills one level's corner rows (relative to the level's table), trilinear weights and
    per-axis weights ``(1 - frac, frac)``."""
    d = x.shape[1]
    pos = x * consts.scales[level] + 0.5
    grid = torch.floor(pos)
    torch.sub(pos, grid, out=axis_weights[:, :, 1])
    torch.sub(1.0, axis_weights[:, :, 1], out=axis_weights[:, :, 0])
    _combine_corners([axis_weights[:, i] for i in range(d)], torch.mul, out=weights)
    grid = grid.to(torch.int32)
    mult = consts.multipliers[level]
    terms = [(grid[:, i, None] + consts.corner_bits) * mult[i] for i in range(d)]
    if consts.dense[level]:
        _combine_corners(terms, torch.add, out=index)
        torch.remainder(index, consts.sizes[level], out=index)
    else:
        # (a ^ b ^ c) & m == (a & m) ^ (b & m) ^ (c & m)
        mask = consts.sizes[level] - 1
        _combine_corners([t.bitwise_and_(mask) for t in terms], torch.bitwise_xor, out=index)


def hash_grid_indices_and_weights(
    x: Float[Tensor, "N D"], layout: HashGridLayout, consts: HashGridTensors, dtype: torch.dtype
) -> Tuple[Tensor, Tensor, Tensor]:
    """Table rows ``[L, N, 2^D]`` (int32, each relative to its level's table; see
    ``HashGridTensors.global_index``), trilinear weights ``[L, N, 2^D]`` and per-axis weights
    ``[L, N, D, 2]``."""
    n, d = x.shape
    n_levels, n_corners = layout.n_levels, 2**d
    index = torch.empty(n_levels, n, n_corners, dtype=torch.int32, device=x.device)
    weights = torch.empty(n_levels, n, n_corners, dtype=dtype, device=x.device)
    axis_weights = torch.empty(n_levels, n, d, 2, dtype=dtype, device=x.device)
    x = x.to(dtype)
    for level in range(n_levels):
        _level_indices_and_weights(
            x, level, consts, index[level], weights[level], axis_weights[level]
        )
    return index, weights, axis_weights


def _scatter_add_rows(table: Tensor, index: Tensor, rows: Tensor) -> None:
    """``table[index[i]] += rows[i]`` (in place, differentiable).

    Rows of two features are added as one complex number: a 1-D ``index_add_`` then runs a
    plain loop that also takes int32 indices, about 3x faster on CPU than the row-wise 2-D path,
    which additionally wants int64 indices (int32 ones take a much slower path).
    """
    f = table.shape[-1]
    rows = rows.reshape(-1, f)
    if f == 2 and table.dtype in (torch.float32, torch.float64):
        torch.view_as_complex(table).index_add_(0, index, torch.view_as_complex(rows))
    elif f == 1:
        table.view(-1).index_add_(0, index, rows.view(-1))
    else:
        table.index_add_(0, index.long(), rows)


class _HashGridInterpolation(torch.autograd.Function):
    """Level by level, so every temporary of a level stays cache-sized. Forward: the level's
    corner rows and weights, then one fused ``embedding_bag`` (no ``[N, 8, F]`` row tensor).
    Backward: the weighted output gradient scattered with one ``index_add_`` per level; no
    autograd graph over the gathers.

    The backward uses differentiable ops, so a ``create_graph=True`` backward (analytic normals
    trained by an eikonal loss) differentiates the input gradient w.r.t. the parameters and the
    upstream gradient. The second derivative w.r.t. the input itself is not formed (piecewise
    trilinear: it is zero along each axis; tcnn does not provide it either).
    """

    @staticmethod
    def forward(ctx, x, params, layout, consts):
        n, d = x.shape
        n_levels, f = layout.n_levels, layout.n_features
        dtype = params.dtype
        index = torch.empty(n_levels, n, 2**d, dtype=torch.int32, device=x.device)
        weights = torch.empty(n_levels, n, 2**d, dtype=dtype, device=x.device)
        axis_weights = torch.empty(n_levels, n, d, 2, dtype=dtype, device=x.device)
        out = torch.empty(n, n_levels, f, dtype=dtype, device=x.device)
        table = params.view(-1, f)
        xd = x.detach().to(dtype)
        for level in range(n_levels):
            _level_indices_and_weights(
                xd, level, consts, index[level], weights[level], axis_weights[level]
            )
            out[:, level] = F.embedding_bag(
                index[level],
                consts.level_table(table, level),
                per_sample_weights=weights[level],
                mode="sum",
            )
        ctx.layout, ctx.consts = layout, consts
        ctx.save_for_backward(params, index, weights, axis_weights)
        return out.view(n, n_levels * f)

    @staticmethod
    def backward(ctx, grad_out):
        params, index, weights, axis_weights = ctx.saved_tensors
        layout, consts = ctx.layout, ctx.consts
        n_levels, f, d = layout.n_levels, layout.n_features, layout.n_input_dims
        grad = grad_out.reshape(-1, n_levels, f).to(params.dtype)  # [N, L, F]
        grad_x = grad_params = None
        if ctx.needs_input_grad[1]:
            grad_table = params.new_zeros(params.numel() // f, f)
            for level in range(n_levels):
                contributions = weights[level].unsqueeze(-1) * grad[:, level].unsqueeze(1)
                _scatter_add_rows(
                    consts.level_table(grad_table, level), index[level].view(-1), contributions
                )
            grad_params = grad_table.view(-1)
        if ctx.needs_input_grad[0]:
            # d out / d frac_i is the same interpolation with axis i's weights (1 - t, t)
            # replaced by (-1, +1): one more fused embedding_bag per axis, no row tensor
            table = params.view(-1, f)
            sign = consts.sign.to(params.dtype)
            per_axis: List[List[Tensor]] = [[] for _ in range(d)]
            for level in range(n_levels):
                table_l = consts.level_table(table, level)
                for i in range(d):
                    factors = [axis_weights[level, :, j] for j in range(d)]
                    factors[i] = sign.expand_as(factors[i])
                    d_weights = _combine_corners(factors, torch.mul).reshape(index[level].shape)
                    d_out = F.embedding_bag(
                        index[level], table_l, per_sample_weights=d_weights, mode="sum"
                    )
                    term = (d_out * grad[:, level]).sum(-1) * consts.scales[level]
                    per_axis[i].append(term)
            grad_x = torch.stack([sum(terms) for terms in per_axis], dim=-1)
        return grad_x, grad_params, None, None


class HashGridEncoding(nn.Module):
    """The hash-grid table (``params``, tcnn's flat layout) and its two backends.

    On CUDA with tiny-cuda-nn importable the table is handed to a ``tcnn.Encoding``; everywhere
    else the pure-PyTorch interpolation runs. Both read and train the same ``params``, so a
    checkpoint written by either loads into the other.
    """

    def __init__(self, n_input_dims: int, config: dict):
        super().__init__()
        self.config = {k: v for k, v in config.items() if k not in ("include_xyz",)}
        self.config["otype"] = "HashGrid"
        self.layout = HashGridLayout.from_config(n_input_dims, self.config)
        self.n_input_dims = n_input_dims
        self.n_output_dims = self.layout.n_levels * self.layout.n_features
        # tcnn's initialisation: uniform in [-1e-4, 1e-4]
        self.params = nn.Parameter((torch.rand(self.layout.n_params) * 2 - 1) * 1e-4)
        self._consts: Dict[torch.device, HashGridTensors] = {}
        self._tcnn_encoding = None  # built on first CUDA call; not a submodule (no extra state)

    def forward(self, x: Float[Tensor, "*B Di"]) -> Float[Tensor, "*B Do"]:
        batch_shape = x.shape[:-1]
        x = x.reshape(-1, self.n_input_dims)
        if use_tcnn(x):
            out = self._forward_tcnn(x)
        else:
            consts = self._consts.get(x.device)
            if consts is None:
                consts = self._consts[x.device] = HashGridTensors(self.layout, x.device)
            out = _HashGridInterpolation.apply(x, self.params, self.layout, consts)
        return out.reshape(*batch_shape, self.n_output_dims)

    def _forward_tcnn(self, x: Tensor) -> Tensor:
        if self._tcnn_encoding is None:
            tcnn = _tinycudann()
            with torch.cuda.device(x.device):
                encoding = tcnn.Encoding(self.n_input_dims, self.config, dtype=torch.float32)
            assert encoding.params.numel() == self.params.numel(), (
                f"tcnn hash grid has {encoding.params.numel()} parameters, "
                f"the PyTorch layout {self.params.numel()}"
            )
            self.__dict__["_tcnn_encoding"] = encoding
        encoding = self._tcnn_encoding
        encoding.params = self.params  # train our parameter through tcnn's kernels
        return encoding(x.float().contiguous()).float()


class HashGrid(nn.Module):
    """``otype: HashGrid``. The table sits in ``self.encoding`` so state-dict keys match
    threestudio checkpoints trained with tiny-cuda-nn (``...encoding.encoding.params``)."""

    def __init__(self, n_input_dims: int, config: dict):
        super().__init__()
        self.encoding = HashGridEncoding(n_input_dims, config)
        self.n_input_dims = n_input_dims
        self.n_output_dims = self.encoding.n_output_dims

    def forward(self, x: Float[Tensor, "*B Di"]) -> Float[Tensor, "*B Do"]:
        return self.encoding(x)


TorchHashGrid = HashGrid  # name of the baseline implementation


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


def make_hash_grid(n_input_dims: int, config: dict) -> nn.Module:
    return HashGrid(n_input_dims, config)


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
    """Bias-free MLP; also the pure-PyTorch stand-in for tcnn's ``FullyFusedMLP``."""

    def __init__(self, dim_in: int, dim_out: int, config: dict):
        super().__init__()
        self.n_neurons, self.n_hidden_layers = config["n_neurons"], config["n_hidden_layers"]
        self.activation = str(config.get("activation", "ReLU")).lower()
        if self.activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(
                f"unknown MLP activation '{config['activation']}'"
                f"{did_you_mean(self.activation, HIDDEN_ACTIVATIONS)}"
            )
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


class SphereInitVanillaMLP(nn.Module):
    """MLP initialised so its output approximates the SDF of a sphere (geometric init)."""

    def __init__(self, dim_in, dim_out, config):
        super().__init__()
        self.n_neurons, self.n_hidden_layers = config["n_neurons"], config["n_hidden_layers"]
        self.sphere_init, self.weight_norm = True, True
        self.sphere_init_radius = config["sphere_init_radius"]
        self.sphere_init_inside_out = config.get("inside_out", False)
        self.layers = [self.make_linear(dim_in, self.n_neurons, is_first=True, is_last=False)]
        self.layers += [self.make_activation()]
        for _ in range(self.n_hidden_layers - 1):
            self.layers += [
                self.make_linear(self.n_neurons, self.n_neurons, is_first=False, is_last=False),
                self.make_activation(),
            ]
        self.layers += [self.make_linear(self.n_neurons, dim_out, is_first=False, is_last=True)]
        self.layers = nn.Sequential(*self.layers)
        self.output_activation = get_activation(config.get("output_activation", None))

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.layers(x.float())
            x = self.output_activation(x)
        return x

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


NETWORKS = {
    "VanillaMLP": VanillaMLP,
    # the pure-PyTorch stand-in for tcnn's FullyFusedMLP: the same architecture
    "FullyFusedMLP": VanillaMLP,
    "CutlassMLP": VanillaMLP,
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
