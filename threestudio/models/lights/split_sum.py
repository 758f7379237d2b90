"""Split-sum image-based lighting (Karis, "Real Shading in Unreal Engine 4", 2013) in plain PyTorch.

The light a GGX microfacet surface reflects from an environment map is split into two factors:
the environment prefiltered with the GGX lobe, looked up in the mirrored view direction at the
surface's roughness, times the BRDF integrated against a white environment, ``F0 * A + B``,
read from a table over (n . v, roughness). Diffuse light is the irradiance map (the environment
convolved with the clamped cosine, over pi) looked up at the normal.

This is what the established PBR material gets from ``envlight`` (nvdiffrast cube maps, CUDA
only); here the maps are latitude-longitude images, prefiltered exactly and on any device:
a rotation-invariant (zonal) kernel on a lat-long grid is a circular convolution along each row's
longitude, so every output row is a sum of FFT products over the input rows. Conventions are
envlight's, so environment maps light a scene the same way: the map's top row is +y (u =
atan2(x, -z) / 2pi + 0.5, v = acos(y) / pi); six levels, level i prefiltered at roughness
``0.08 + i / 4 * (0.5 - 0.08)`` for i < 5 and 1 for the last; the same roughness-to-level mapping
and linear blending between neighbouring levels; the specular kernel ``(n . l) D(n . h) / 4``
with n = v = r, normalised; the irradiance map from the map box-filtered to 16 rows (envlight:
its 16-texel cube level). Where envlight divides the cosine sum by pi and drops the GGX tail
beyond a cut-off, the sums here are exact and normalised by the discrete kernel's total, so a
constant environment gives back its radiance exactly.
"""

import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from threestudio.utils.errors import UserError
from threestudio.utils.paths import REPO_ROOT
from threestudio.utils.typing import Callable, Float, List, Optional, Tensor

# envlight's chain of cube-map mips (512 down to 16) has six levels
N_LEVELS = 6
MIN_ROUGHNESS = 0.08  # envlight's roughness of the sharpest level
MAX_ROUGHNESS = 0.5  # envlight's roughness of the second-to-last level (the last is 1)


# ---------------------------------------------------------------- GGX


def ggx_ndf(alpha2: Tensor, cos_h: Tensor) -> Tensor:
    """The GGX (Trowbridge-Reitz) normal distribution D(h) for ``alpha2`` = roughness^4."""
    c2 = cos_h.clamp(0.0, 1.0) ** 2
    d = c2 * (alpha2 - 1.0) + 1.0
    return alpha2 / (math.pi * d * d)


def smith_ggx_correlated(alpha2: Tensor, n_dot_v: Tensor, n_dot_l: Tensor) -> Tensor:
    """The height-correlated Smith masking-shadowing G2 = 1 / (1 + Lambda(v) + Lambda(l)) of GGX."""

    def lam(mu: Tensor) -> Tensor:
        mu2 = mu.clamp(1e-12, 1.0) ** 2
        return 0.5 * (torch.sqrt(1.0 + alpha2 * (1.0 - mu2) / mu2) - 1.0)

    return 1.0 / (1.0 + lam(n_dot_v) + lam(n_dot_l))


@torch.no_grad()
def integrate_brdf_lut(
    size: int = 256, n_theta: int = 128, n_phi: int = 32, rows_per_chunk: int = 4
) -> Float[Tensor, "R M 2"]:
    """The split-sum BRDF table: entry [i, j] is (A, B) at roughness (i + 0.5) / size and
    n . v = (j + 0.5) / size, where a white environment reflects ``F0 * A + B`` off a GGX
    surface (Schlick's Fresnel, height-correlated Smith G, alpha = roughness^2).

    Deterministic quadrature in the half-vector: midpoints of the GGX inverse CDF in cos(theta_h)
    (``n_theta``) times midpoints in phi over [0, pi] (``n_phi``; the integrand is even in phi).
    Under that importance measure the reflected radiance is the mean of
    G (v . h) / ((n . v)(n . h)) weighted by 1 - Fc (A) and Fc = (1 - v . h)^5 (B)."""
    dtype = torch.float64
    coords = (torch.arange(size, dtype=dtype) + 0.5) / size
    xi = (torch.arange(n_theta, dtype=dtype) + 0.5) / n_theta
    phi = (torch.arange(n_phi, dtype=dtype) + 0.5) / n_phi * math.pi
    mu = coords.view(1, -1, 1, 1)  # n . v
    v_x, v_z = torch.sqrt(1.0 - mu**2), mu
    out = torch.empty(size, size, 2, dtype=dtype)
    for start in range(0, size, rows_per_chunk):
        roughness = coords[start : start + rows_per_chunk].view(-1, 1, 1, 1)
        alpha2 = roughness**4
        cos_h = torch.sqrt(
            (1.0 - xi.view(1, 1, -1, 1)) / (1.0 + (alpha2 - 1.0) * xi.view(1, 1, -1, 1))
        )
        sin_h = torch.sqrt((1.0 - cos_h**2).clamp_min(0.0))
        h_x = sin_h * torch.cos(phi).view(1, 1, 1, -1)
        v_dot_h = v_x * h_x + v_z * cos_h
        n_dot_l = 2.0 * v_dot_h * cos_h - mu
        valid = (n_dot_l > 0) & (v_dot_h > 0)
        g = smith_ggx_correlated(alpha2, mu.expand_as(n_dot_l), n_dot_l.clamp_min(1e-12))
        g_vis = torch.where(valid, g * v_dot_h / (cos_h * mu), torch.zeros_like(g))
        fc = (1.0 - v_dot_h.clamp(0.0, 1.0)) ** 5
        out[start : start + rows_per_chunk, :, 0] = ((1.0 - fc) * g_vis).mean(dim=(2, 3))
        out[start : start + rows_per_chunk, :, 1] = (fc * g_vis).mean(dim=(2, 3))
    return out.float()


def load_brdf_lut(path: str) -> Float[Tensor, "1 R M 2"]:
    """The table as the established code stores it (``bsdf_256_256.bin``: raw float32, rows of
    roughness, columns of n . v, (A, B) per entry)."""
    if not os.path.isfile(path):
        raise UserError(
            f"BRDF table not found: {path} (write it with `python scripts/make_lights.py`)"
        )
    data = np.fromfile(path, dtype=np.float32)
    size = int(round(math.sqrt(data.size // 2)))
    if size * size * 2 != data.size:
        raise UserError(f"{path} is not a square table of (A, B) pairs ({data.size} floats)")
    return torch.from_numpy(data.reshape(1, size, size, 2).copy())


def sample_brdf_lut(
    lut: Float[Tensor, "1 R M 2"], n_dot_v: Float[Tensor, "*N 1"], roughness: Float[Tensor, "*N 1"]
) -> Float[Tensor, "*N 2"]:
    """Bilinear lookup with clamped borders at (n . v, roughness) in [0, 1] (texel centres at
    (i + 0.5) / size, as nvdiffrast's ``texture(filter_mode="linear", boundary_mode="clamp")``)."""
    prefix = n_dot_v.shape[:-1]
    uv = torch.cat([n_dot_v, roughness], dim=-1).clamp(0.0, 1.0).reshape(1, 1, -1, 2)
    grid = uv * 2.0 - 1.0  # x: n . v along the columns, y: roughness along the rows
    table = lut.permute(0, 3, 1, 2).to(grid.dtype)
    out = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].transpose(0, 1).reshape(*prefix, 2)


# ---------------------------------------------------------------- lat-long maps


def latlong_angles(height: int, width: int, dtype=torch.float64):
    """Polar angle from +y of each row's texel centres and longitude of each column's."""
    theta = (torch.arange(height, dtype=dtype) + 0.5) / height * math.pi
    phi = ((torch.arange(width, dtype=dtype) + 0.5) / width - 0.5) * 2.0 * math.pi
    return theta, phi


def latlong_directions(height: int, width: int) -> Float[Tensor, "H W 3"]:
    """Unit direction of each texel centre (envlight's mapping, +y at the top row)."""
    theta, phi = latlong_angles(height, width)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([t.sin() * p.sin(), t.cos(), -t.sin() * p.cos()], dim=-1)
    return dirs.float()


def direction_to_uv(dirs: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 2"]:
    d = F.normalize(dirs, dim=-1)
    u = torch.atan2(d[..., 0], -d[..., 2]) / (2.0 * math.pi) + 0.5
    v = torch.acos(d[..., 1].clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u, v], dim=-1)


def texel_solid_angles(height: int, width: int, dtype=torch.float64) -> Float[Tensor, "H"]:
    """Exact solid angle of one texel of each row (they sum to 4 pi over the map)."""
    edges = torch.arange(height + 1, dtype=dtype) / height * math.pi
    return (edges[:-1].cos() - edges[1:].cos()) * (2.0 * math.pi / width)


def sample_latlong(
    image: Float[Tensor, "H W C"], dirs: Float[Tensor, "*N 3"]
) -> Float[Tensor, "*N C"]:
    """Bilinear lookup in the direction ``dirs``: wrapping in longitude, clamped at the poles."""
    height, width = image.shape[:2]
    prefix = dirs.shape[:-1]
    uv = direction_to_uv(dirs.reshape(-1, 3))
    # one wrapped column each side, then texel centres at integer positions (align_corners)
    padded = torch.cat([image[:, -1:], image, image[:, :1]], dim=1)
    x = (uv[:, 0] * width - 0.5 + 1.0) / (width + 1) * 2.0 - 1.0
    y = (uv[:, 1] * height - 0.5) / max(height - 1, 1) * 2.0 - 1.0
    grid = torch.stack([x, y], dim=-1).view(1, 1, -1, 2)
    out = F.grid_sample(
        padded.permute(2, 0, 1)[None].to(grid.dtype),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return out[0, :, 0].transpose(0, 1).reshape(*prefix, image.shape[-1])


def resize_latlong(image: Float[Tensor, "H W C"], height: int) -> Float[Tensor, "h w C"]:
    """The map as ``height`` x ``2 height`` texels: area-averaged when shrinking, bilinear
    otherwise."""
    size = (height, 2 * height)
    if tuple(image.shape[:2]) == size:
        return image
    x = image.permute(2, 0, 1)[None]
    if size[0] <= image.shape[0] and size[1] <= image.shape[1]:
        x = F.interpolate(x, size=size, mode="area")
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).contiguous()


@torch.no_grad()
def prefilter_latlong(
    image: Float[Tensor, "H W C"],
    kernel: Callable[[Tensor], Tensor],
    rows_per_chunk: int = 32,
) -> Float[Tensor, "H W C"]:
    """``out(n) = sum_l image(l) k(n . l) dw(l) / sum_l k(n . l) dw(l)`` over every texel l, at
    every texel centre n (exact, no cut-off). For a row of outputs the weights depend on the
    longitude difference only, so each row is a sum over input rows of circular convolutions,
    done as FFT products."""
    height, width, _ = image.shape
    theta, phi = latlong_angles(height, width)
    dphi = phi - phi[0]  # longitude offsets 0, 2pi/W, ...
    omega = texel_solid_angles(height, width)
    image_f = torch.fft.rfft(image.double(), dim=1)  # [H_in, F, C]
    out = torch.empty(height, width, image.shape[-1], dtype=torch.float64)
    ct, st = theta.cos(), theta.sin()
    for start in range(0, height, rows_per_chunk):
        o = slice(start, start + rows_per_chunk)
        # cos of the angle between output row o (longitude 0) and input texel (s, offset d)
        cos_gamma = (
            ct[o, None, None] * ct[None, :, None]
            + st[o, None, None] * st[None, :, None] * dphi.cos()[None, None, :]
        ).clamp(-1.0, 1.0)
        weights = kernel(cos_gamma) * omega[None, :, None]  # [O, H_in, W]
        norm = weights.sum(dim=(1, 2)).clamp_min(1e-300)
        weights_f = torch.fft.rfft(weights, dim=2)  # [O, H_in, F]
        rows_f = torch.einsum("osf,sfc->ofc", weights_f, image_f)
        out[o] = torch.fft.irfft(rows_f, n=width, dim=1) / norm[:, None, None]
    return out.to(image.dtype)


def specular_kernel(roughness: float) -> Callable[[Tensor], Tensor]:
    """The GGX prefilter weight (n . l) D(n . h) / 4 for n = v = r, a function of n . l alone
    (n . h = cos(angle / 2) = sqrt((1 + n . l) / 2))."""
    alpha2 = torch.tensor(float(roughness) ** 4, dtype=torch.float64)

    def kernel(cos_gamma: Tensor) -> Tensor:
        cos_h = torch.sqrt((1.0 + cos_gamma) * 0.5)
        return cos_gamma.clamp_min(0.0) * ggx_ndf(alpha2, cos_h) / 4.0

    return kernel


def diffuse_kernel(cos_gamma: Tensor) -> Tensor:
    """The clamped cosine over pi (irradiance over pi: a white Lambertian surface's radiance)."""
    return cos_gamma.clamp_min(0.0) / math.pi


def level_roughness(level: int, n_levels: int = N_LEVELS) -> float:
    """The roughness level ``level`` is prefiltered at (envlight's schedule)."""
    if level == n_levels - 1:
        return 1.0
    return MIN_ROUGHNESS + level / (n_levels - 2) * (MAX_ROUGHNESS - MIN_ROUGHNESS)


def roughness_to_level(
    roughness: Float[Tensor, "*N 1"], n_levels: int = N_LEVELS
) -> Float[Tensor, "*N 1"]:
    """Fractional level: 0 up to MIN_ROUGHNESS, linear to n_levels - 2 at MAX_ROUGHNESS, then
    linear to the last level at roughness 1."""
    low = (roughness.clamp(MIN_ROUGHNESS, MAX_ROUGHNESS) - MIN_ROUGHNESS) / (
        MAX_ROUGHNESS - MIN_ROUGHNESS
    )
    high = (roughness.clamp(MAX_ROUGHNESS, 1.0) - MAX_ROUGHNESS) / (1.0 - MAX_ROUGHNESS)
    return torch.where(roughness < MAX_ROUGHNESS, low * (n_levels - 2), high + n_levels - 2)


def load_environment_map(path: str) -> Float[Tensor, "H W 3"]:
    """A lat-long environment map as linear RGB float32 (Radiance .hdr or OpenEXR, or an 8-bit
    image scaled to [0, 1]). A relative path is read from the working directory, else from the
    repository (so the shipped ``load/lights/...`` is found from anywhere)."""
    import cv2

    candidates = [path] if os.path.isabs(path) else [path, os.path.join(REPO_ROOT, path)]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise UserError(f"environment map not found: {path}")
    image = cv2.imread(found, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read the environment map {found} (use a .hdr or .exr file)")
    image = image[..., :3][..., ::-1]  # OpenCV's BGR
    if image.dtype != np.float32:
        image = image.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(image))


class EnvironmentLight(nn.Module):
    """Prefiltered lat-long levels and an irradiance map of one environment map. The maps are
    buffers that are not saved (rebuilt from the file), so checkpoints stay small."""

    def __init__(
        self,
        image: Float[Tensor, "H W 3"],
        scale: float = 1.0,
        resolution: int = 128,
        min_height: int = 8,
        diffuse_height: int = 16,
        n_levels: int = N_LEVELS,
    ) -> None:
        super().__init__()
        self.n_levels = n_levels
        image = image.float() * scale
        base = resize_latlong(image, min(resolution, image.shape[0]))
        mips: List[Tensor] = [base]
        for _ in range(1, n_levels):
            prev = mips[-1]
            if prev.shape[0] // 2 >= min_height:
                prev = F.avg_pool2d(prev.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
            mips.append(prev)
        self.roughness_of_level = [level_roughness(i, n_levels) for i in range(n_levels)]
        for i, (mip, roughness) in enumerate(zip(mips, self.roughness_of_level)):
            filtered = prefilter_latlong(mip, specular_kernel(roughness))
            self.register_buffer(f"specular_{i}", filtered.contiguous(), persistent=False)
        coarse = resize_latlong(image, min(diffuse_height, image.shape[0]))
        self.register_buffer(
            "diffuse_map", prefilter_latlong(coarse, diffuse_kernel).contiguous(), persistent=False
        )

    @classmethod
    def from_file(cls, path: str, scale: float = 1.0, **kwargs) -> "EnvironmentLight":
        return cls(load_environment_map(path), scale=scale, **kwargs)

    def specular_levels(self) -> List[Tensor]:
        return [getattr(self, f"specular_{i}") for i in range(self.n_levels)]

    def forward(
        self, dirs: Float[Tensor, "*N 3"], roughness: Optional[Float[Tensor, "*N 1"]] = None
    ) -> Float[Tensor, "*N 3"]:
        """Irradiance (over pi) around ``dirs`` without ``roughness``; else the GGX-prefiltered
        radiance in ``dirs``, blended linearly between the two levels around the roughness."""
        if roughness is None:
            return sample_latlong(self.diffuse_map, dirs)
        level = roughness_to_level(roughness, self.n_levels)  # [*N, 1]
        out = torch.zeros(*dirs.shape[:-1], 3, dtype=dirs.dtype, device=dirs.device)
        for i, mip in enumerate(self.specular_levels()):
            weight = (1.0 - (level - i).abs()).clamp_min(0.0)
            if bool((weight > 0).any()):
                out = out + weight * sample_latlong(mip, dirs)
        return out
