"""A dense voxel grid of density and features, read by trilinear interpolation (the explicit
volume of DreamFusion-style experiments). Voxel (i, j, k) sits at the centre of the i-th, j-th,
k-th cell of the scene box along x, y, z."""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

import threestudio
from threestudio.models.geometry.base import (
    BaseGeometry,
    BaseImplicitGeometry,
    DensityLevelMixin,
    check_normal_type,
    contract_to_unisphere,
)
from threestudio.models.geometry.implicit_volume import DENSITY_BIASES, density_blob
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor, Tuple, Union


def trilinear_sample(
    grid: Float[Tensor, "C G1 G2 G3"], coords: Float[Tensor, "*N 3"]
) -> Float[Tensor, "*N C"]:
    """Sample ``grid`` at ``coords`` in [-1, 1]^3 (x indexes G1, y G2, z G3; cell centres, as
    ``align_corners=False``); outside the grid the border value is repeated."""
    batch_shape = coords.shape[:-1]
    # grid_sample reads the last coordinate as the first spatial axis
    out = F.grid_sample(
        grid[None],
        coords.reshape(1, 1, 1, -1, 3).flip(-1),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return out.reshape(grid.shape[0], -1).T.reshape(*batch_shape, grid.shape[0])


def inverse_activation(name: Optional[str], value: Tensor) -> Tensor:
    """A pre-activation value that ``get_activation(name)`` maps to ``value``."""
    name = (name or "none").lower()
    if name in ("none", "identity"):
        return value
    if name == "softplus":
        value = value.clamp_min(1e-6)
        return torch.where(value > 20, value, torch.log(torch.expm1(value)))
    if name in ("exp", "trunc_exp"):
        return torch.log(value.clamp_min(1e-6))
    if name in ("shifted_exp", "shifted_trunc_exp"):
        return torch.log(value.clamp_min(1e-6)) + 1.0
    raise ConfigError(
        f"density_activation '{name}' cannot be inverted to build a volume-grid from another "
        "geometry (use softplus, exp, trunc_exp or none)"
    )


@threestudio.register("volume-grid")
class VolumeGrid(DensityLevelMixin, BaseImplicitGeometry):
    @dataclass
    class Config(BaseImplicitGeometry.Config):
        # voxels along x, y, z (1 density + n_feature_dims channels, trilinear look-up)
        grid_size: Tuple[int, int, int] = field(default_factory=lambda: (100, 100, 100))
        n_feature_dims: int = 3  # feature channels beside the density
        density_activation: Optional[str] = "softplus"  # a get_activation name
        # "blob" (= blob_magic3d), "blob_magic3d", "blob_dreamfusion" or a number (then the density
        # also gets a learned log-scale, as in DreamFusion)
        density_bias: Union[float, int, str] = "blob"
        density_blob_scale: float = 5.0  # the blob's height
        density_blob_std: float = 0.5  # the blob's width
        # pred (a 3-channel grid) | finite_difference | finite_difference_laplacian | analytic
        normal_type: Optional[str] = "finite_difference"
        finite_difference_normal_eps: float = 1.0e-3  # step of the finite differences

        # density of the exported surface, or "auto" (mean of the positive densities)
        isosurface_threshold: Union[float, int, str] = "auto"

    cfg: Config

    def configure(self) -> None:
        super().configure()
        check_normal_type(self.cfg.normal_type)
        if isinstance(self.cfg.density_bias, str) and self.cfg.density_bias not in (
            "blob",
            *DENSITY_BIASES,
        ):
            raise ConfigError(
                f"density_bias: unknown value '{self.cfg.density_bias}' (use a number, blob, "
                f"{', '.join(DENSITY_BIASES)})"
            )
        self.grid_size = tuple(self.cfg.grid_size)
        self.density_activation = get_activation(self.cfg.density_activation)
        # channel 0 is density, the rest are features
        self.grid = nn.Parameter(torch.zeros(self.cfg.n_feature_dims + 1, *self.grid_size))
        # a learned log-scale on the density (DreamFusion) unless a blob fixes the density's scale
        if isinstance(self.cfg.density_bias, str):
            self.register_buffer("density_scale", torch.tensor(0.0))
        else:
            self.density_scale = nn.Parameter(torch.tensor(0.0))
        if self.cfg.normal_type == "pred":
            self.normal_grid = nn.Parameter(torch.zeros(3, *self.grid_size))

    def to_grid_coords(self, points: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 3"]:
        return contract_to_unisphere(points, self.bbox, self.unbounded) * 2 - 1

    def density_bias(self, points: Float[Tensor, "*N 3"]) -> Union[float, Float[Tensor, "*N 1"]]:
        kind = self.cfg.density_bias
        if isinstance(kind, str):
            kind = "blob_magic3d" if kind == "blob" else kind
            return density_blob(
                points.detach(), kind, self.cfg.density_blob_scale, self.cfg.density_blob_std
            )
        return float(kind)

    def forward_raw_density(self, points: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 1"]:
        density = trilinear_sample(self.grid[:1], self.to_grid_coords(points))
        return density * torch.exp(self.density_scale) + self.density_bias(points)

    def forward_density(self, points: Float[Tensor, "*N 3"]) -> Float[Tensor, "*N 1"]:
        return self.density_activation(self.forward_raw_density(points))

    def _forward(
        self, points: Float[Tensor, "*N 3"], output_normal: bool, create_graph: bool
    ) -> Dict[str, Tensor]:
        coords = self.to_grid_coords(points)
        out = trilinear_sample(self.grid, coords)
        raw_density = out[..., :1] * torch.exp(self.density_scale) + self.density_bias(points)
        density = self.density_activation(raw_density)
        output: Dict[str, Tensor] = {
            "density": density,
            "features": out[..., 1:],
        }
        if output_normal:
            normal_type = self.cfg.normal_type
            if normal_type in ("finite_difference", "finite_difference_laplacian"):
                normal = self.finite_difference_normal(points, density)
            elif normal_type == "pred":
                normal = trilinear_sample(self.normal_grid, coords)
            elif normal_type == "analytic":
                # the blob is built from detached points: differentiate the grid part and
                # add the blob's gradient by autograd on a fresh copy
                normal = -torch.autograd.grad(
                    self._raw_density_differentiable(points),
                    points,
                    create_graph=create_graph,
                )[0]
            else:
                raise ConfigError("normal_type must be set to compute normals")
            normal = F.normalize(normal, dim=-1)
            output.update({"normal": normal, "shading_normal": normal})
        return output

    def _raw_density_differentiable(self, points: Float[Tensor, "*N 3"]) -> Tensor:
        density = trilinear_sample(self.grid[:1], self.to_grid_coords(points))
        bias = self.cfg.density_bias
        if isinstance(bias, str):
            kind = "blob_magic3d" if bias == "blob" else bias
            bias = density_blob(
                points, kind, self.cfg.density_blob_scale, self.cfg.density_blob_std
            )
        return (density * torch.exp(self.density_scale) + bias).sum()

    def export(self, points: Float[Tensor, "*N 3"], **kwargs) -> Dict[str, Any]:
        if self.cfg.n_feature_dims == 0:
            return {}
        return {"features": trilinear_sample(self.grid[1:], self.to_grid_coords(points))}

    def voxel_centers(self) -> Float[Tensor, "G1 G2 G3 3"]:
        """World positions of the voxel centres."""
        axes = []
        for d, n in enumerate(self.grid_size):
            lo, hi = float(self.bbox[0, d]), float(self.bbox[1, d])
            step = (hi - lo) / n
            axes.append(torch.linspace(lo + step / 2, hi - step / 2, n, device=self.bbox.device))
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    @staticmethod
    @torch.no_grad()
    def create_from(
        other: BaseGeometry, cfg: Optional[Union[dict, Any]] = None, chunk: int = 65536, **kwargs
    ) -> "VolumeGrid":
        """Sample any implicit geometry with ``forward_density`` (and features from ``export``)
        at the voxel centres; the grid stores the pre-activation values that reproduce them."""
        if not hasattr(other, "forward_density"):
            raise ConfigError(
                f"cannot create volume-grid from {other.__class__.__name__}: it has no density "
                "(use an implicit-volume or volume-grid)"
            )
        instance = VolumeGrid(cfg, **kwargs)
        instance.to(other.bbox.device)
        points = instance.voxel_centers().reshape(-1, 3)
        density = torch.cat(
            [other.forward_density(points[i : i + chunk]) for i in range(0, len(points), chunk)]
        )
        raw = inverse_activation(instance.cfg.density_activation, density)
        raw = raw - instance.density_bias(points)
        instance.grid.data[0] = raw.reshape(instance.grid_size) / torch.exp(instance.density_scale)
        n_feat = instance.cfg.n_feature_dims
        if n_feat > 0:
            features = torch.cat(
                [
                    other.export(points[i : i + chunk]).get("features", torch.zeros(0))
                    for i in range(0, len(points), chunk)
                ]
            )
            if features.shape[-1:] == (n_feat,) and features.shape[0] == len(points):
                instance.grid.data[1:] = features.T.reshape(n_feat, *instance.grid_size)
            else:
                threestudio.warn(
                    f"{other.__class__.__name__} has no {n_feat}-channel features to copy; "
                    "volume-grid features start at zero"
                )
        return instance
