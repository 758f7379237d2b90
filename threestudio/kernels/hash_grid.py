"""The multiresolution hash grid (Instant-NGP) with tiny-cuda-nn's parameter layout, and its two
backends: tiny-cuda-nn's kernels when ``tinycudann`` imports and the input is on CUDA, a
cache-tuned pure-PyTorch interpolation everywhere else. ``use_tcnn`` is the one place that
decides. Both backends read and train the same flat ``params``, so a checkpoint written by either
loads into the other. Inputs are expected in [0, 1].
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from threestudio.kernels.backend import report_fallback, tinycudann
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Dict, Float, Int, List, Optional, Tensor, Tuple

# ---------------------------------------------------------------------------------------------
# Backend choice: the only place that decides between tiny-cuda-nn and pure PyTorch
# ---------------------------------------------------------------------------------------------


def use_tcnn(x: Tensor) -> bool:
    """Run on tiny-cuda-nn when it imports and the input lives on a CUDA device."""
    return x.is_cuda and tinycudann() is not None


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
        self.dense = layout.dense
        self.sizes = layout.sizes
        self.offsets = layout.offsets[:-1]
        self.scales = layout.scales
        # dense levels use row-major strides (x + y * res + z * res^2), hashed ones tcnn's
        # primes as int32 (multiplication wraps like tcnn's uint32 arithmetic, and the low bits,
        # all that the power-of-two mask keeps, agree); one [D, 1] column per level
        self.multipliers: List[Tensor] = [
            torch.tensor(
                [layout.resolutions[level] ** i for i in range(d)]
                if layout.dense[level]
                else [_as_int32(p) for p in HASH_PRIMES[:d]],
                dtype=torch.int32,
                device=device,
            ).view(d, 1)
            for level in range(layout.n_levels)
        ]
        self.sign = torch.tensor([[-1.0], [1.0]], device=device)  # d(1 - t, t)/dt, as [2, 1]

    def level_table(self, table: Tensor, level: int) -> Tensor:
        return table[self.offsets[level] : self.offsets[level] + self.sizes[level]]

    def global_index(self, index: Int[Tensor, "L N C"]) -> Int[Tensor, "L N C"]:
        """Indices into the whole table (int64), for callers outside the fast path."""
        offsets = torch.tensor(self.offsets, dtype=torch.long, device=index.device)
        return index.long() + offsets.view(-1, *([1] * (index.dim() - 1)))


def _combine_corners(terms: List[Tensor], op, out: Optional[Tensor] = None) -> Tensor:
    """Per-axis ``[2, N]`` terms -> ``[2, ..., 2, N]`` (corner-major), one row per corner;
    corner bit ``i`` (counted from the last corner axis) belongs to input axis ``i``.

    Corner-major keeps the points on the innermost, contiguous axis: the broadcasting ops then
    run as long vectorised loops (point-major ``[N, 2, 2, 2]`` loops over runs of two and is
    ~30x slower on CPU).
    """
    d = len(terms)
    result = None
    for i, term in enumerate(terms):
        shape = tuple(2 if j == d - 1 - i else 1 for j in range(d)) + term.shape[-1:]
        term = term.view(shape)
        if result is None:
            result = term
        elif i == d - 1 and out is not None:
            result = op(result, term, out=out.view((2,) * d + out.shape[-1:]))
        else:
            result = op(result, term)
    return result


def _level_indices_and_weights(
    xt: Float[Tensor, "D N"],
    level: int,
    consts: HashGridTensors,
    index: Int[Tensor, "C N"],
    weights: Float[Tensor, "C N"],
    axis_weights: Float[Tensor, "D 2 N"],
) -> None:
    """Fills one level's corner rows (relative to the level's table), trilinear weights and
    per-axis weights ``(1 - frac, frac)``, all corner-major."""
    d = xt.shape[0]
    pos = xt * consts.scales[level] + 0.5
    grid = torch.floor(pos)
    torch.sub(pos, grid, out=axis_weights[:, 1])
    torch.sub(1.0, axis_weights[:, 1], out=axis_weights[:, 0])
    _combine_corners([axis_weights[i] for i in range(d)], torch.mul, out=weights)
    # per-axis terms (g * m, (g + 1) * m); (g + 1) * m == g * m + m also under int32 wrapping
    mult = consts.multipliers[level]
    terms = torch.empty(d, 2, xt.shape[1], dtype=torch.int32, device=xt.device)
    torch.mul(grid.to(torch.int32), mult, out=terms[:, 0])
    torch.add(terms[:, 0], mult, out=terms[:, 1])
    if consts.dense[level]:
        _combine_corners(list(terms), torch.add, out=index)
        torch.remainder(index, consts.sizes[level], out=index)
    else:
        # (a ^ b ^ c) & m == (a & m) ^ (b & m) ^ (c & m)
        terms.bitwise_and_(consts.sizes[level] - 1)
        _combine_corners(list(terms), torch.bitwise_xor, out=index)


def hash_grid_indices_and_weights(
    x: Float[Tensor, "N D"], layout: HashGridLayout, consts: HashGridTensors, dtype: torch.dtype
) -> Tuple[Tensor, Tensor, Tensor]:
    """Table rows ``[L, N, 2^D]`` (int32, each relative to its level's table; see
    ``HashGridTensors.global_index``), trilinear weights ``[L, N, 2^D]`` and per-axis weights
    ``[L, N, D, 2]``; corner ``c`` has bit ``i`` set where it takes axis ``i``'s upper vertex."""
    n, d = x.shape
    index = torch.empty(layout.n_levels, 2**d, n, dtype=torch.int32, device=x.device)
    weights = torch.empty(layout.n_levels, 2**d, n, dtype=dtype, device=x.device)
    axis_weights = torch.empty(layout.n_levels, d, 2, n, dtype=dtype, device=x.device)
    xt = x.to(dtype).t().contiguous()
    for level in range(layout.n_levels):
        _level_indices_and_weights(
            xt, level, consts, index[level], weights[level], axis_weights[level]
        )
    return index.transpose(1, 2), weights.transpose(1, 2), axis_weights.permute(0, 3, 1, 2)


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


_TRANSPOSE_BLOCK = 8192  # rows per block: a [block, <=32] slab of both sides stays in L1/L2
POINT_BLOCK = 65536  # points per block: a block's temporaries (~10 MB for 3-D) stay in L3


def _transposed(src: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``src.t()`` made contiguous, copied in blocks along the long axis: a cache-sized block
    transposes ~2.5x faster than one whole-tensor copy."""
    if torch.is_grad_enabled() and src.requires_grad:
        return src.t().contiguous()  # differentiable (double backward)
    a, b = src.shape
    if out is None:
        out = src.new_empty(b, a)
    for start in range(0, max(a, b), _TRANSPOSE_BLOCK):
        block = slice(start, start + _TRANSPOSE_BLOCK)
        if a >= b:
            out[:, block].copy_(src[block].t())
        else:
            out[block].copy_(src[:, block].t())
    return out


def _set_level(out: Float[Tensor, "N L F"], level: int, value: Float[Tensor, "N F"]) -> None:
    """``out[:, level] = value``; two features are written as one column of complex numbers (a
    single strided loop instead of runs of two, ~5x faster) unless autograd records the write."""
    fast = not (torch.is_grad_enabled() and value.requires_grad)
    if fast and out.shape[-1] == 2 and out.dtype in (torch.float32, torch.float64):
        torch.view_as_complex(out)[:, level] = torch.view_as_complex(value)
    else:
        out[:, level] = value


def _weighted_rows(
    weights: Float[Tensor, "C N"], grad: Float[Tensor, "F N"], differentiable: bool
) -> Float[Tensor, "C N F"]:
    """``weights[c, n] * grad[f, n]``. The fast path writes each feature plane with one long
    loop over the points (a ``[C, N, 1] * [1, N, F]`` broadcast loops over runs of F and is ~5x
    slower); ``out=`` is not differentiable, so a double backward takes the broadcast."""
    if differentiable:
        return weights.unsqueeze(-1) * grad.t().unsqueeze(0)
    rows = weights.new_empty(*weights.shape, grad.shape[0])
    for k in range(grad.shape[0]):
        torch.mul(weights, grad[k], out=rows[..., k])
    return rows


def _projected_rows(
    table: Float[Tensor, "T F"], index: Int[Tensor, "C B"], grad: Float[Tensor, "F B"]
) -> Float[Tensor, "C B"]:
    """``sum_f table[index[c, b], f] * grad[f, b]``: each corner's row contracted with the
    upstream gradient of its point (the rows are gathered once, corner-major)."""
    c, b = index.shape
    if table.shape[-1] == 2 and table.dtype in (torch.float32, torch.float64):
        # one gather of complex numbers; its real view reads as two strided planes
        rows = torch.view_as_real(torch.view_as_complex(table).index_select(0, index.view(-1)))
    else:
        rows = table.index_select(0, index.view(-1))
    rows = rows.view(c, b, -1)
    projected = rows[..., 0] * grad[0]
    for k in range(1, grad.shape[0]):
        projected = projected + rows[..., k] * grad[k]
    return projected


class _BlockScratch:
    """One block of points at one level: corner-major rows and weights, and the point-major
    copies ``embedding_bag`` reads. The buffers are reused from block to block and level to
    level, so they stay in cache and never fault in fresh pages; the backward recomputes a
    block's rows from the input instead of keeping ``[L, 2^D, N]`` tensors (cheaper than
    writing and re-reading them, and far less memory)."""

    def __init__(self, n: int, d: int, dtype: torch.dtype, device: torch.device):
        self.d, self.c = d, 2**d
        self._index = torch.empty(self.c * n, dtype=torch.int32, device=device)
        self._weights = torch.empty(self.c * n, dtype=dtype, device=device)
        self._axis_weights = torch.empty(d * 2 * n, dtype=dtype, device=device)
        self._bag_index = self._bag_weights = None  # the forward's only; made on first use

    def fill(self, xt: Float[Tensor, "D B"], level: int, consts: HashGridTensors) -> None:
        b, c, d = xt.shape[1], self.c, self.d
        self.index = self._index[: c * b].view(c, b)
        self.weights = self._weights[: c * b].view(c, b)
        self.axis_weights = self._axis_weights[: d * 2 * b].view(d, 2, b)
        _level_indices_and_weights(xt, level, consts, self.index, self.weights, self.axis_weights)

    def bag_index(self) -> Int[Tensor, "B C"]:
        if self._bag_index is None:
            self._bag_index = torch.empty_like(self._index)
        b = self.index.shape[1]
        return _transposed(self.index, out=self._bag_index[: b * self.c].view(b, self.c))

    def bag_weights(self) -> Float[Tensor, "B C"]:
        if self._bag_weights is None:
            self._bag_weights = torch.empty_like(self._weights)
        b = self.weights.shape[1]
        return _transposed(self.weights, out=self._bag_weights[: b * self.c].view(b, self.c))


def _point_blocks(n: int):
    for start in range(0, n, POINT_BLOCK):
        yield slice(start, min(start + POINT_BLOCK, n))


class _HashGridInterpolation(torch.autograd.Function):
    """Level by level (a level's table stays in cache) and block by block of points (the
    temporaries stay in cache), corner-major (``[2^D, N]``, so the index and weight arithmetic
    runs as long vectorised loops). Forward: one fused ``embedding_bag`` per block (no
    ``[N, 8, F]`` row tensor). Backward: the block's rows and weights recomputed from the input,
    the weighted output gradient scattered with one ``index_add_``; no autograd graph over the
    gathers.

    The backward uses differentiable ops when a graph is being built, so a ``create_graph=True``
    backward (analytic normals trained by an eikonal loss) differentiates the input gradient
    w.r.t. the parameters and the upstream gradient. The second derivative w.r.t. the input
    itself is not formed (piecewise trilinear: it is zero along each axis; tcnn does not provide
    it either).
    """

    @staticmethod
    def forward(ctx, x, params, layout, consts):
        n, d = x.shape
        n_levels, f = layout.n_levels, layout.n_features
        out = torch.empty(n, n_levels, f, dtype=params.dtype, device=x.device)
        table = params.view(-1, f)
        xt = x.detach().to(params.dtype).t().contiguous()
        scratch = _BlockScratch(min(n, POINT_BLOCK), d, params.dtype, x.device)
        for level in range(n_levels):
            table_l = consts.level_table(table, level)
            for block in _point_blocks(n):
                scratch.fill(xt[:, block], level, consts)
                value = F.embedding_bag(
                    scratch.bag_index(),
                    table_l,
                    per_sample_weights=scratch.bag_weights(),
                    mode="sum",
                )
                _set_level(out[block], level, value)
        ctx.layout, ctx.consts = layout, consts
        ctx.save_for_backward(params, xt)
        return out.view(n, n_levels * f)

    @staticmethod
    def backward(ctx, grad_out):
        params, xt = ctx.saved_tensors
        layout, consts = ctx.layout, ctx.consts
        n_levels, f, d = layout.n_levels, layout.n_features, layout.n_input_dims
        n = xt.shape[1]
        # create_graph=True: every op below is recorded, so nothing may be reused or written
        # with out=
        differentiable = torch.is_grad_enabled()
        grad = grad_out.reshape(n, n_levels * f).to(params.dtype)
        grad_planes = _transposed(grad).view(n_levels, f, n)  # long loops over the points
        want_x, want_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        table = params.view(-1, f)
        grad_table = params.new_zeros(table.shape) if want_params else None
        grad_xt = params.new_zeros(d, n) if want_x else None
        sign = consts.sign.to(params.dtype)
        scratch = None
        for level in range(n_levels):
            for block in _point_blocks(n):
                if scratch is None or differentiable:
                    scratch = _BlockScratch(min(n, POINT_BLOCK), d, params.dtype, xt.device)
                scratch.fill(xt[:, block], level, consts)
                grad_block = grad_planes[level, :, block]  # [F, B]
                if want_params:
                    rows = _weighted_rows(scratch.weights, grad_block, differentiable)
                    _scatter_add_rows(
                        consts.level_table(grad_table, level), scratch.index.view(-1), rows
                    )
                if want_x:
                    # d out / d frac_i is the interpolation with axis i's weights (1 - t, t)
                    # replaced by (-1, +1); contracted with the upstream gradient first, each
                    # corner row becomes one number, so every axis costs a few [2^D, B] ops
                    projected = _projected_rows(
                        consts.level_table(table, level), scratch.index, grad_block
                    )
                    for i in range(d):
                        factors = list(scratch.axis_weights)
                        factors[i] = sign
                        d_weights = _combine_corners(factors, torch.mul).view_as(projected)
                        term = (d_weights * projected).sum(0)
                        grad_xt[i, block] += term * consts.scales[level]  # d frac / d x
        grad_x = grad_xt.t() if want_x else None
        grad_params = grad_table.view(-1) if want_params else None
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
        if tinycudann() is None:
            report_fallback(
                "HashGrid", "tiny-cuda-nn", "tinycudann is not installed or does not load"
            )

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
            tcnn = tinycudann()
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


def make_hash_grid(n_input_dims: int, config: dict) -> nn.Module:
    """``otype: HashGrid``, built by ``threestudio.models.networks.get_encoding``."""
    return HashGrid(n_input_dims, config)
