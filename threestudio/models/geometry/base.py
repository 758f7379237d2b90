"""Geometry bases. Implicit geometries answer density/SDF and features at points and can extract
an isosurface mesh; explicit geometries (meshes, tet grids) hold a surface directly."""

from dataclasses import dataclass

import torch

import threestudio
from threestudio.models.mesh import Mesh
from threestudio.models.networks import get_encoding, get_mlp
from threestudio.utils.base import BaseModule
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.ops import chunk_batch, scale_tensor
from threestudio.utils.typing import Any, Callable, Dict, Float, Optional, Tensor, Tuple, Union


def default_pos_encoding_config() -> dict:
    """The published DreamFusion/Magic3D hash grid: 16 levels x 2 features, 2^19 table, finest
    resolution 4096."""
    return {
        "otype": "HashGrid",
        "n_levels": 16,
        "n_features_per_level": 2,
        "log2_hashmap_size": 19,
        "base_resolution": 16,
        "per_level_scale": 1.447269237440378,
    }


def default_mlp_network_config() -> dict:
    return {
        "otype": "VanillaMLP",
        "activation": "ReLU",
        "output_activation": "none",
        "n_neurons": 64,
        "n_hidden_layers": 1,
    }


def contract_to_unisphere(
    x: Float[Tensor, "... 3"], bbox: Float[Tensor, "2 3"], unbounded: bool = False
) -> Float[Tensor, "... 3"]:
    """Map points to [0, 1]^3: the bbox linearly, or (``unbounded``) with the Mip-NeRF 360
    contraction so that all of space fits."""
    if unbounded:
        x = scale_tensor(x, bbox, (0, 1))
        x = x * 2 - 1  # aabb is at [-1, 1]
        mag = x.norm(dim=-1, keepdim=True)
        mask = mag.squeeze(-1) > 1
        x = x.clone()
        x[mask] = (2 - 1 / mag[mask]) * (x[mask] / mag[mask])
        x = x / 4 + 0.5  # [-inf, inf] is at [0, 1]
    else:
        x = scale_tensor(x, bbox, (0, 1))
    return x


NORMAL_TYPES = ("pred", "finite_difference", "finite_difference_laplacian", "analytic")


def finite_difference_gradient(
    field_fn: Callable[[Float[Tensor, "... 3"]], Float[Tensor, "... 1"]],
    points: Float[Tensor, "*N 3"],
    eps: float,
    central: bool,
    radius: float,
    field_at_points: Optional[Float[Tensor, "*N 1"]] = None,
) -> Float[Tensor, "*N 3"]:
    """Gradient of a scalar field by finite differences: forward differences (3 extra queries,
    reusing ``field_at_points``) or central differences (``central``, 6 queries). Offset points
    are clamped to the scene box ``[-radius, radius]^3``."""
    if central:
        offsets = torch.cat([torch.eye(3), -torch.eye(3)], dim=0) * eps  # +x +y +z -x -y -z
    else:
        offsets = torch.eye(3) * eps
    offsets = offsets.to(points)
    points_offset = (points[..., None, :] + offsets).clamp(-radius, radius)
    values = field_fn(points_offset)[..., 0]  # [*N, 3 or 6]
    if central:
        return (values[..., :3] - values[..., 3:]) / (2.0 * eps)
    if field_at_points is None:
        field_at_points = field_fn(points)
    return (values - field_at_points) / eps


def check_normal_type(normal_type: Optional[str], allowed=NORMAL_TYPES) -> None:
    if normal_type is not None and normal_type not in allowed:
        raise ConfigError(
            f"normal_type: unknown value '{normal_type}' (use one of {', '.join(allowed)})"
        )


def wants_shape_init(cfg: Any) -> bool:
    """Whether ``initialize_shape`` should set the shape from ``cfg.shape_init``: it is set, and
    no pretrained ``weights`` take precedence (unless ``force_shape_init``)."""
    if cfg.shape_init is None:
        if cfg.force_shape_init:
            raise ConfigError("force_shape_init is set but shape_init is not")
        return False
    return cfg.weights is None or cfg.force_shape_init


class BaseGeometry(BaseModule):
    @dataclass
    class Config(BaseModule.Config):
        pass

    cfg: Config

    @staticmethod
    def create_from(
        other: "BaseGeometry", cfg: Optional[Union[dict, Any]] = None, **kwargs
    ) -> "BaseGeometry":
        raise ConfigError(
            f"cannot create a geometry from {other.__class__.__name__}: no conversion is defined"
        )

    def initialize_shape(self) -> None:
        """Called by the system when training starts: geometries with a shape prior (e.g.
        ``implicit-sdf`` with ``shape_init``) fit it here."""

    def export(self, *args, **kwargs) -> Dict[str, Any]:
        return {}

    def _register_bbox(self, radius: float) -> None:
        """The scene box ``[-radius, radius]^3``, a buffer so it moves and saves with the module."""
        self.bbox: Float[Tensor, "2 3"]
        self.register_buffer(
            "bbox", torch.as_tensor([[-radius] * 3, [radius] * 3], dtype=torch.float32)
        )


class BaseImplicitGeometry(BaseGeometry):
    @dataclass
    class Config(BaseGeometry.Config):
        radius: float = 1.0  # the scene box is [-radius, radius]^3
        isosurface: bool = True  # false: isosurface() (mesh export, conversion) is an error
        isosurface_method: str = "mt"  # "mc" (marching cubes) or "mt" (marching tetrahedra)
        isosurface_resolution: int = 128  # grid points per axis
        # field value of the surface: a number, or "auto" (mean of the positive field values)
        isosurface_threshold: Union[float, int, str] = 0.0
        isosurface_chunk: int = 0  # points per field query while extracting (0: all at once)
        # extract once in the scene box, then again in the mesh's box (+10%)
        isosurface_coarse_to_fine: bool = True
        # a deformation predicted per grid vertex for marching tetrahedra ("mt" only)
        isosurface_deformable_grid: bool = False
        # drop connected components smaller than isosurface_outlier_n_faces_threshold
        isosurface_remove_outliers: bool = True
        # an int: a face count; a float: a fraction of all faces
        isosurface_outlier_n_faces_threshold: Union[int, float] = 0.01

    cfg: Config

    def configure(self) -> None:
        self._register_bbox(self.cfg.radius)
        self.isosurface_helper: Optional[Any] = None
        self.unbounded: bool = False

    def _initilize_isosurface_helper(self):
        if self.cfg.isosurface and self.isosurface_helper is None:
            from threestudio.models.isosurface import (
                MarchingCubeCPUHelper,
                MarchingTetrahedraHelper,
            )

            if self.cfg.isosurface_method == "mc-cpu" or self.cfg.isosurface_method == "mc":
                self.isosurface_helper = MarchingCubeCPUHelper(self.cfg.isosurface_resolution).to(
                    self.device
                )
            elif self.cfg.isosurface_method == "mt":
                self.isosurface_helper = MarchingTetrahedraHelper(
                    self.cfg.isosurface_resolution
                ).to(self.device)
            else:
                raise ConfigError(
                    f"isosurface_method: unknown method '{self.cfg.isosurface_method}' "
                    "(use 'mc' or 'mt')"
                )

    def forward(
        self, points: Float[Tensor, "*N Di"], output_normal: bool = False
    ) -> Dict[str, Tensor]:
        """The field's outputs at ``points`` (see ``_forward``). Analytic normals differentiate the
        field with autograd, also under ``torch.no_grad()`` (evaluation): autograd is on for the
        call and the points are made a leaf that requires grad."""
        grad_enabled = torch.is_grad_enabled()
        analytic = output_normal and getattr(self.cfg, "normal_type", None) == "analytic"
        with torch.set_grad_enabled(grad_enabled or analytic):
            if analytic and not points.requires_grad:
                points = points.detach().requires_grad_(True)
            return self._forward(points, output_normal, create_graph=grad_enabled)

    def _forward(
        self, points: Float[Tensor, "*N Di"], output_normal: bool, create_graph: bool
    ) -> Dict[str, Tensor]:
        """The body of ``forward``: density or SDF, features and (``output_normal``) normals.
        ``create_graph``: the caller had autograd on, so normals stay differentiable."""
        raise NotImplementedError

    def forward_field(
        self, points: Float[Tensor, "*N Di"]
    ) -> Tuple[Float[Tensor, "*N 1"], Optional[Float[Tensor, "*N 3"]]]:
        """The raw field (density or SDF) and, optionally, a deformation."""
        raise NotImplementedError

    def forward_level(
        self, field: Float[Tensor, "*N 1"], threshold: float
    ) -> Float[Tensor, "*N 1"]:
        """A level value that is negative inside the surface (``field`` at ``threshold``)."""
        raise NotImplementedError

    def _isosurface(self, bbox: Float[Tensor, "2 3"], fine_stage: bool = False) -> Mesh:
        def batch_func(x):
            # scale to the bbox, as the field is queried in world space
            x = scale_tensor(x.to(bbox.device), self.isosurface_helper.points_range, bbox)
            field, deformation = self.forward_field(x)
            field = field.to(x.device)
            if deformation is not None:
                deformation = deformation.to(x.device)
            return field, deformation

        assert self.isosurface_helper is not None
        field, deformation = chunk_batch(
            batch_func, self.cfg.isosurface_chunk, self.isosurface_helper.grid_vertices
        )

        threshold: float
        if isinstance(self.cfg.isosurface_threshold, (int, float)):
            threshold = float(self.cfg.isosurface_threshold)
        elif self.cfg.isosurface_threshold == "auto":
            eps = 1.0e-5
            threshold = field[field > eps].mean().item()
            threestudio.info(f"Automatically determined isosurface threshold: {threshold}")
        else:
            raise ConfigError(
                f"isosurface_threshold: expected a number or 'auto', got "
                f"{self.cfg.isosurface_threshold!r}"
            )

        level = self.forward_level(field, threshold)
        mesh: Mesh = self.isosurface_helper(level, deformation=deformation)
        mesh.v_pos = scale_tensor(mesh.v_pos, self.isosurface_helper.points_range, bbox)
        mesh.add_extra("bbox", bbox)
        return mesh

    def isosurface(self) -> Mesh:
        if not self.cfg.isosurface:
            raise ConfigError("isosurface is disabled for this geometry (isosurface: false)")
        self._initilize_isosurface_helper()
        if self.cfg.isosurface_coarse_to_fine:
            threestudio.debug("First run isosurface to get a tight bounding box ...")
            with torch.no_grad():
                mesh_coarse = self._isosurface(self.bbox)
            if mesh_coarse.v_pos.shape[0] == 0:
                mesh = mesh_coarse
            else:
                vmin, vmax = mesh_coarse.v_pos.amin(dim=0), mesh_coarse.v_pos.amax(dim=0)
                vmin_ = (vmin - (vmax - vmin) * 0.1).max(self.bbox[0])
                vmax_ = (vmax + (vmax - vmin) * 0.1).min(self.bbox[1])
                threestudio.debug("Run isosurface again with the tight bounding box ...")
                mesh = self._isosurface(torch.stack([vmin_, vmax_], dim=0), fine_stage=True)
        else:
            mesh = self._isosurface(self.bbox)
        if mesh.v_pos.shape[0] == 0:
            raise UserError(
                "the isosurface is empty: the field has no surface at "
                f"system.geometry.isosurface_threshold={self.cfg.isosurface_threshold} "
                "(try system.geometry.isosurface_threshold=auto, or train longer)"
            )
        if self.cfg.isosurface_remove_outliers:
            mesh = mesh.remove_outlier(self.cfg.isosurface_outlier_n_faces_threshold)
        return mesh


class DensityLevelMixin:
    """``forward_field``/``forward_level`` for geometries whose field is a density: the surface
    is where the density crosses the threshold, inside (denser) is negative."""

    def forward_field(
        self, points: Float[Tensor, "*N Di"]
    ) -> Tuple[Float[Tensor, "*N 1"], Optional[Float[Tensor, "*N 3"]]]:
        if self.cfg.isosurface_deformable_grid:
            threestudio.warn(
                f"{self.__class__.__name__} does not support isosurface_deformable_grid; ignored"
            )
        return self.forward_density(points), None

    def forward_level(
        self, field: Float[Tensor, "*N 1"], threshold: float
    ) -> Float[Tensor, "*N 1"]:
        return -(field - threshold)

    def finite_difference_normal(
        self, points: Float[Tensor, "*N 3"], density: Float[Tensor, "*N 1"]
    ) -> Float[Tensor, "*N 3"]:
        """Minus the finite-difference gradient of the activated density (``forward_density``,
        as the established ImplicitVolume differences it; density grows inwards), not yet
        normalised; ``density`` is its value at ``points``. Central differences for
        ``finite_difference_laplacian``."""
        return -finite_difference_gradient(
            self.forward_density,
            points,
            self.cfg.finite_difference_normal_eps,
            central=self.cfg.normal_type == "finite_difference_laplacian",
            radius=self.cfg.radius,
            field_at_points=density,
        )


class EncodedFieldMixin:
    """For implicit geometries that read everything off one positional encoding of the points:
    ``encode``, the feature head (``n_feature_dims`` > 0) and the normal head (``pred``)."""

    def configure_heads(self) -> None:
        if self.cfg.n_feature_dims > 0:
            self.feature_network = get_mlp(
                self.encoding.n_output_dims, self.cfg.n_feature_dims, self.cfg.mlp_network_config
            )
        if self.cfg.normal_type == "pred":
            self.normal_network = get_mlp(
                self.encoding.n_output_dims, 3, self.cfg.mlp_network_config
            )

    def encode(self, points: Float[Tensor, "*N Di"]) -> Float[Tensor, "N Denc"]:
        points_normalized = contract_to_unisphere(points, self.bbox, self.unbounded)
        return self.encoding(points_normalized.reshape(-1, self.cfg.n_input_dims))

    def features_from(
        self, enc: Float[Tensor, "N Denc"], batch_shape: torch.Size
    ) -> Dict[str, Float[Tensor, "*N Nf"]]:
        """``{"features": ...}`` read off the encoding, or ``{}`` without a feature head."""
        if self.cfg.n_feature_dims == 0:
            return {}
        return {"features": self.feature_network(enc).view(*batch_shape, self.cfg.n_feature_dims)}

    def export(self, points: Float[Tensor, "*N Di"], **kwargs) -> Dict[str, Any]:
        return self.features_from(self.encode(points), points.shape[:-1])


class BaseExplicitGeometry(BaseGeometry):
    @dataclass
    class Config(BaseGeometry.Config):
        radius: float = 1.0  # the scene box is [-radius, radius]^3

    cfg: Config

    def configure(self) -> None:
        self._register_bbox(self.cfg.radius)


class TextureFieldMixin:
    """For explicit geometries that carry a surface of their own: a texture field (encoding +
    MLP over the scene box) queried at surface points. It has no normals (the mesh has)."""

    def configure_texture_field(self) -> None:
        self.encoding = get_encoding(self.cfg.n_input_dims, self.cfg.pos_encoding_config)
        self.feature_network = get_mlp(
            self.encoding.n_output_dims, self.cfg.n_feature_dims, self.cfg.mlp_network_config
        )

    @property
    def has_texture_field(self) -> bool:
        return True

    def texture_features(self, points: Float[Tensor, "*N Di"]) -> Float[Tensor, "*N Nf"]:
        points_normalized = contract_to_unisphere(points, self.bbox)
        enc = self.encoding(points_normalized.reshape(-1, self.cfg.n_input_dims))
        return self.feature_network(enc).view(*points.shape[:-1], self.cfg.n_feature_dims)

    def forward(
        self, points: Float[Tensor, "*N Di"], output_normal: bool = False
    ) -> Dict[str, Tensor]:
        assert not output_normal, (
            f"{self.__class__.__name__} has no normal field; use the mesh's normals"
        )
        if not self.has_texture_field:
            return {}
        return {"features": self.texture_features(points)}

    def export(self, points: Float[Tensor, "*N Di"], **kwargs) -> Dict[str, Any]:
        if not self.has_texture_field or self.cfg.n_feature_dims == 0:
            return {}
        return {"features": self.texture_features(points)}
