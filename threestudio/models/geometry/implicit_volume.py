"""A density field: positional encoding + MLPs giving density and features (DreamFusion/Magic3D
coarse stage). A "blob" added to the pre-activation density keeps early training focused on the
centre of the scene."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.geometry.base import (
    BaseGeometry,
    BaseImplicitGeometry,
    DensityLevelMixin,
    EncodedFieldMixin,
    check_normal_type,
    default_mlp_network_config,
    default_pos_encoding_config,
)
from threestudio.models.networks import get_encoding, get_mlp
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError
from threestudio.utils.ops import get_activation
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor, Tuple, Union

DENSITY_BIASES = ("blob_dreamfusion", "blob_magic3d")


def density_blob(
    points: Float[Tensor, "*N 3"], kind: str, scale: float, std: float
) -> Float[Tensor, "*N 1"]:
    """Pre-activation density bias: a Gaussian (DreamFusion) or a cone (Magic3D) around 0."""
    r2 = (points**2).sum(dim=-1, keepdim=True)
    if kind == "blob_dreamfusion":
        return scale * torch.exp(-0.5 * r2 / std**2)
    if kind == "blob_magic3d":
        return scale * (1.0 - torch.sqrt(r2) / std)
    raise ConfigError(
        f"density_bias: unknown value '{kind}' (use a number or one of {', '.join(DENSITY_BIASES)})"
    )


@threestudio.register("implicit-volume")
class ImplicitVolume(DensityLevelMixin, EncodedFieldMixin, BaseImplicitGeometry):
    @dataclass
    class Config(BaseImplicitGeometry.Config):
        n_input_dims: int = 3  # coordinates per point
        n_feature_dims: int = 3  # outputs of the feature network (0: none)
        density_activation: Optional[str] = "softplus"  # get_activation name (exp, trunc_exp...)
        # added before the activation: blob_magic3d = scale * (1 - r / std),
        # blob_dreamfusion = scale * exp(-r^2 / (2 std^2)), or a number
        density_bias: Union[float, int, str] = "blob_magic3d"
        density_blob_scale: float = 10.0  # the blob's height
        density_blob_std: float = 0.5  # the blob's width
        # tcnn vocabulary (otype HashGrid, ProgressiveBandHashGrid, Frequency, ...)
        pos_encoding_config: dict = field(default_factory=default_pos_encoding_config)
        # the density and the feature networks (otype VanillaMLP or FullyFusedMLP)
        mlp_network_config: dict = field(default_factory=default_mlp_network_config)
        # pred (an MLP) | finite_difference (forward, 3 extra queries) | finite_difference_laplacian
        # (central, 6) | analytic (autograd, also under no_grad)
        normal_type: Optional[str] = "finite_difference"
        finite_difference_normal_eps: float = 0.01  # step of the finite differences
        # {min_anneal_step, max_anneal_step, start_val, end_val}: linear schedule of the blob std
        anneal_density_blob_std_config: Optional[dict] = None

        # density of the exported surface, or "auto" (mean of the positive densities)
        isosurface_threshold: Union[float, int, str] = 25.0

    cfg: Config

    def configure(self) -> None:
        super().configure()
        check_normal_type(self.cfg.normal_type)
        if isinstance(self.cfg.density_bias, str) and self.cfg.density_bias not in DENSITY_BIASES:
            raise ConfigError(
                f"density_bias: unknown value '{self.cfg.density_bias}' "
                f"(use a number or one of {', '.join(DENSITY_BIASES)})"
            )
        self.density_activation = get_activation(self.cfg.density_activation)
        self.density_blob_std: float = self.cfg.density_blob_std
        self.encoding = get_encoding(self.cfg.n_input_dims, self.cfg.pos_encoding_config)
        self.density_network = get_mlp(self.encoding.n_output_dims, 1, self.cfg.mlp_network_config)
        self.configure_heads()

    # ---- field evaluation ----

    def density_bias(self, points: Float[Tensor, "*N Di"]) -> Union[float, Float[Tensor, "*N 1"]]:
        if isinstance(self.cfg.density_bias, str):
            return density_blob(
                points, self.cfg.density_bias, self.cfg.density_blob_scale, self.density_blob_std
            )
        return float(self.cfg.density_bias)

    def get_activated_density(
        self, points: Float[Tensor, "*N Di"], density: Float[Tensor, "*N 1"]
    ) -> Tuple[Float[Tensor, "*N 1"], Float[Tensor, "*N 1"]]:
        """(raw density = network output + bias, activated density)."""
        raw_density = density + self.density_bias(points)
        return raw_density, self.density_activation(raw_density)

    def _forward(
        self, points: Float[Tensor, "*N Di"], output_normal: bool, create_graph: bool
    ) -> Dict[str, Tensor]:
        batch_shape = points.shape[:-1]
        enc = self.encode(points)
        density = self.density_network(enc).view(*batch_shape, 1)
        raw_density, density = self.get_activated_density(points, density)
        output: Dict[str, Tensor] = {"density": density, **self.features_from(enc, batch_shape)}
        if output_normal:
            normal = self._normal(points, enc, raw_density, density, create_graph)
            output.update({"normal": normal, "shading_normal": normal})
        return output

    def _normal(
        self,
        points: Float[Tensor, "*N 3"],
        enc: Float[Tensor, "N Denc"],
        raw_density: Float[Tensor, "*N 1"],
        density: Float[Tensor, "*N 1"],
        create_graph: bool,
    ) -> Float[Tensor, "*N 3"]:
        # density grows inwards, so the outward normal is minus its gradient
        normal_type = self.cfg.normal_type
        if normal_type in ("finite_difference", "finite_difference_laplacian"):
            normal = self.finite_difference_normal(points, density)
        elif normal_type == "pred":
            normal = self.normal_network(enc).view(*points.shape[:-1], 3)
        elif normal_type == "analytic":
            # the raw density is used: the activation does not change the gradient's direction
            # and saturates less (as multinerf does)
            grad = torch.autograd.grad(
                raw_density,
                points,
                grad_outputs=torch.ones_like(raw_density),
                create_graph=create_graph,
            )[0]
            normal = -grad
        else:
            raise ConfigError("normal_type must be set to compute normals")
        return F.normalize(normal, dim=-1)

    def forward_raw_density(self, points: Float[Tensor, "*N Di"]) -> Float[Tensor, "*N 1"]:
        density = self.density_network(self.encode(points)).reshape(*points.shape[:-1], 1)
        return density + self.density_bias(points)

    def forward_density(self, points: Float[Tensor, "*N Di"]) -> Float[Tensor, "*N 1"]:
        return self.density_activation(self.forward_raw_density(points))

    # ---- training schedule ----

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        anneal = self.cfg.anneal_density_blob_std_config
        if anneal is None:
            return
        anneal = config_to_primitive(anneal)
        try:
            min_step, max_step = anneal["min_anneal_step"], anneal["max_anneal_step"]
            start_val, end_val = anneal["start_val"], anneal["end_val"]
        except KeyError as e:
            raise ConfigError(
                f"anneal_density_blob_std_config: missing key {e} (needs min_anneal_step, "
                "max_anneal_step, start_val, end_val)"
            ) from None
        if global_step < min_step:
            return
        frac = (
            1.0
            if max_step <= min_step
            else min((global_step - min_step) / (max_step - min_step), 1.0)
        )
        self.density_blob_std = start_val + frac * (end_val - start_val)

    # ---- conversion ----

    @staticmethod
    @torch.no_grad()
    def create_from(
        other: BaseGeometry,
        cfg: Optional[Union[dict, Any]] = None,
        copy_net: bool = True,
        **kwargs,
    ) -> "ImplicitVolume":
        if not isinstance(other, ImplicitVolume):
            raise ConfigError(
                f"cannot create implicit-volume from {other.__class__.__name__} "
                "(only from another implicit-volume)"
            )
        instance = ImplicitVolume(cfg, **kwargs)
        instance.encoding.load_state_dict(other.encoding.state_dict())
        instance.density_network.load_state_dict(other.density_network.state_dict())
        if copy_net:
            if (
                instance.cfg.n_feature_dims > 0
                and other.cfg.n_feature_dims == instance.cfg.n_feature_dims
            ):
                instance.feature_network.load_state_dict(other.feature_network.state_dict())
            if instance.cfg.normal_type == "pred" and other.cfg.normal_type == "pred":
                instance.normal_network.load_state_dict(other.normal_network.state_dict())
        return instance
