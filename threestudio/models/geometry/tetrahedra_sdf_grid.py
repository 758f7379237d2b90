"""An explicit surface for mesh refinement (DMTet, Magic3D's second stage): a signed distance
value and an optional deformation stored per vertex of a tetrahedral grid, turned into a mesh by
differentiable marching tetrahedra, plus a texture field (encoding + MLP) queried at surface
points. Rasterised, so losses on images move the SDF values and the grid deformation."""

from dataclasses import dataclass, field

import torch
import torch.nn as nn

import threestudio
from threestudio.models.geometry.base import (
    BaseExplicitGeometry,
    BaseGeometry,
    BaseImplicitGeometry,
    TextureFieldMixin,
    default_mlp_network_config,
    default_pos_encoding_config,
    wants_shape_init,
)
from threestudio.models.geometry.implicit_sdf import ImplicitSDF, load_shape_init_mesh, mesh_sdf
from threestudio.models.isosurface import MarchingTetrahedraHelper
from threestudio.models.mesh import Mesh
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.ops import chunk_batch, scale_tensor
from threestudio.utils.typing import Any, Float, Optional, Tensor, Tuple, Union


def copy_if_shapes_match(target: nn.Module, source: nn.Module, name: str) -> bool:
    """Load ``source``'s state into ``target`` when both hold the same tensors; warn otherwise."""
    src, dst = source.state_dict(), target.state_dict()
    if src.keys() == dst.keys() and all(src[k].shape == dst[k].shape for k in src):
        target.load_state_dict(src)
        return True
    threestudio.warn(f"create_from: {name} differs in shape from the source's; not copied")
    return False


@threestudio.register("tetrahedra-sdf-grid")
class TetrahedraSDFGrid(TextureFieldMixin, BaseExplicitGeometry):
    @dataclass
    class Config(BaseExplicitGeometry.Config):
        isosurface_resolution: int = 128  # cells per axis of the tet grid (load/tets/<N>_tets.npz)
        # a learned offset per grid vertex, at most one cell (span / resolution * tanh(d))
        isosurface_deformable_grid: bool = True
        # drop connected components smaller than isosurface_outlier_n_faces_threshold
        isosurface_remove_outliers: bool = False
        # an int: a face count; a float: a fraction of all faces
        isosurface_outlier_n_faces_threshold: Union[int, float] = 0.01

        n_input_dims: int = 3  # coordinates per point
        n_feature_dims: int = 3  # outputs of the texture field
        # the texture field's encoding (tcnn vocabulary)
        pos_encoding_config: dict = field(default_factory=default_pos_encoding_config)
        # the texture field's network
        mlp_network_config: dict = field(default_factory=default_mlp_network_config)
        # None | "sphere" (params: radius) | "ellipsoid" (params: 3 semi-axes) |
        # "mesh:path/to/mesh.obj" (params: the scale of its largest coordinate)
        shape_init: Optional[str] = None
        shape_init_params: Optional[Any] = None  # see shape_init
        shape_init_mesh_up: str = "+z"  # the mesh file's up axis, turned to +z
        shape_init_mesh_front: str = "+x"  # the mesh file's front axis, turned to +x
        force_shape_init: bool = False  # apply shape_init even over loaded weights
        # no texture field: forward() returns nothing (silhouette or normal supervision only)
        geometry_only: bool = False
        # SDF and deformation are buffers, not parameters, and the mesh is extracted once
        fix_geometry: bool = False

    cfg: Config

    def configure(self) -> None:
        super().configure()
        # the box the [0, 1]^3 tet grid spans; saved with the weights, as create_from tightens it
        self.isosurface_bbox: Float[Tensor, "2 3"]
        self.register_buffer("isosurface_bbox", self.bbox.clone())
        self.isosurface_helper = MarchingTetrahedraHelper(self.cfg.isosurface_resolution)
        n_vertices = self.isosurface_helper.grid_vertices.shape[0]

        sdf = torch.zeros(n_vertices, 1, dtype=torch.float32)
        deformation = torch.zeros(n_vertices, 3, dtype=torch.float32)
        self.sdf: Float[Tensor, "Nv 1"]
        self.deformation: Optional[Float[Tensor, "Nv 3"]]
        if self.cfg.fix_geometry:
            self.register_buffer("sdf", sdf)
            if self.cfg.isosurface_deformable_grid:
                self.register_buffer("deformation", deformation)
            else:
                self.deformation = None
        else:
            self.sdf = nn.Parameter(sdf)
            if self.cfg.isosurface_deformable_grid:
                self.deformation = nn.Parameter(deformation)
            else:
                self.deformation = None

        if self.cfg.shape_init is not None and not self.cfg.shape_init.startswith("mesh:"):
            ImplicitSDF._check_shape_params(
                self.cfg.shape_init, self.cfg.shape_init_params, "shape_init"
            )

        if self.has_texture_field:
            self.configure_texture_field()
        self.mesh: Optional[Mesh] = None

    @property
    def grid_points(self) -> Float[Tensor, "Nv 3"]:
        """The undeformed grid vertices in world coordinates."""
        return scale_tensor(
            self.isosurface_helper.grid_vertices,
            self.isosurface_helper.points_range,
            self.isosurface_bbox,
        )

    # ---- shape initialisation ----

    @torch.no_grad()
    def initialize_shape(self) -> None:
        """Set the grid's SDF to ``shape_init`` (exact values at the grid vertices, no fitting).
        Called by the system at the start of a fresh run."""
        if not wants_shape_init(self.cfg):
            return
        points = self.grid_points
        if self.cfg.shape_init.startswith("mesh:"):
            vertices, faces = load_shape_init_mesh(self.cfg)
            threestudio.info(f"Initializing the tet grid SDF to {self.cfg.shape_init}")
            sdf = mesh_sdf(points, vertices.to(points), faces.to(points.device))
        else:
            sdf = ImplicitSDF.analytic_sdf(self.cfg.shape_init, self.cfg.shape_init_params, points)
        self.sdf.data.copy_(sdf)
        if self.deformation is not None:
            self.deformation.data.zero_()
        self.mesh = None

    # ---- surface ----

    def isosurface(self) -> Mesh:
        """The surface in world coordinates; differentiable in ``sdf`` and ``deformation``."""
        if self.cfg.fix_geometry and self.mesh is not None:
            return self.mesh
        mesh = self.isosurface_helper(self.sdf, self.deformation)
        mesh.v_pos = scale_tensor(
            mesh.v_pos, self.isosurface_helper.points_range, self.isosurface_bbox
        )
        mesh.add_extra("bbox", self.isosurface_bbox)
        if self.cfg.isosurface_remove_outliers:
            mesh = mesh.remove_outlier(self.cfg.isosurface_outlier_n_faces_threshold)
        if self.cfg.fix_geometry:
            self.mesh = mesh
        return mesh

    # ---- texture field ----

    @property
    def has_texture_field(self) -> bool:
        return not self.cfg.geometry_only

    # ---- conversion ----

    @staticmethod
    @torch.no_grad()
    def create_from(
        other: BaseGeometry,
        cfg: Optional[Union[dict, Any]] = None,
        copy_net: bool = True,
        **kwargs,
    ) -> "TetrahedraSDFGrid":
        """From another tetrahedra-sdf-grid (a geometry stage turned into a texture stage): its
        box, SDF and (when both grids are deformable) deformation are copied; the resolutions
        must agree. From an implicit geometry (implicit-volume, implicit-sdf): its field is
        evaluated at the tet grid vertices, thresholded at its ``isosurface_threshold`` (a number
        or "auto") and stored as the grid's level (negative inside); with
        ``isosurface_coarse_to_fine`` the grid is first fitted to the surface's bounding box
        (+10%); a deformation the source predicts is copied when both grids are deformable.
        With ``copy_net`` the texture encoding and feature network are copied where their
        shapes match."""
        if isinstance(other, TetrahedraSDFGrid):
            return TetrahedraSDFGrid._create_from_grid(other, cfg, copy_net, **kwargs)
        if not isinstance(other, BaseImplicitGeometry):
            raise ConfigError(
                f"cannot create tetrahedra-sdf-grid from {other.__class__.__name__} "
                "(use a tetrahedra-sdf-grid, implicit-volume or implicit-sdf stage)"
            )
        instance = TetrahedraSDFGrid(cfg, **kwargs)
        device = other.bbox.device
        instance.to(device)
        bbox = other.bbox.clone()
        level, deformation, threshold = _grid_level(instance, other, bbox)
        if other.cfg.isosurface_coarse_to_fine:
            inside = instance.grid_points_in(bbox)[level[:, 0] < 0]
            if inside.shape[0] > 0:
                # inside vertices, padded by one cell for the crossings just outside them
                cell = (bbox[1] - bbox[0]) / instance.cfg.isosurface_resolution
                vmin, vmax = inside.amin(0) - cell, inside.amax(0) + cell
                vmin_ = (vmin - (vmax - vmin) * 0.1).max(other.bbox[0])
                vmax_ = (vmax + (vmax - vmin) * 0.1).min(other.bbox[1])
                bbox = torch.stack([vmin_, vmax_], dim=0)
                level, deformation, _ = _grid_level(instance, other, bbox, threshold)
        if not (level < 0).any() or (level < 0).all():
            raise UserError(
                f"create_from: {other.__class__.__name__} has no surface at isosurface_threshold="
                f"{other.cfg.isosurface_threshold} on the tet grid (try isosurface_threshold=auto)"
            )
        instance.isosurface_bbox.copy_(bbox)
        instance.sdf.data.copy_(level)
        if instance.deformation is not None and deformation is not None:
            instance.deformation.data.copy_(deformation)
        instance.mesh = None
        if copy_net:
            instance._copy_texture_field(other)
        return instance

    @staticmethod
    @torch.no_grad()
    def _create_from_grid(
        other: "TetrahedraSDFGrid", cfg: Optional[Union[dict, Any]], copy_net: bool, **kwargs
    ) -> "TetrahedraSDFGrid":
        instance = TetrahedraSDFGrid(cfg, **kwargs)
        if instance.cfg.isosurface_resolution != other.cfg.isosurface_resolution:
            raise ConfigError(
                "create_from: isosurface_resolution differs from the source tetrahedra-sdf-grid's "
                f"({instance.cfg.isosurface_resolution} vs {other.cfg.isosurface_resolution}); "
                "set it to the source's"
            )
        instance.to(other.sdf.device)
        instance.isosurface_bbox.copy_(other.isosurface_bbox)
        instance.sdf.data.copy_(other.sdf.data)
        if instance.deformation is not None and other.deformation is not None:
            instance.deformation.data.copy_(other.deformation.data)
        elif other.deformation is not None:
            threestudio.warn(
                "create_from: the source grid's deformation is dropped "
                "(isosurface_deformable_grid is false here)"
            )
        instance.mesh = None
        if copy_net and other.has_texture_field:
            instance._copy_texture_field(other)
        return instance

    def _copy_texture_field(self, other: BaseGeometry) -> None:
        if self.cfg.geometry_only:
            return
        if hasattr(other, "encoding") and hasattr(other, "feature_network"):
            if copy_if_shapes_match(self.encoding, other.encoding, "encoding"):
                copy_if_shapes_match(self.feature_network, other.feature_network, "feature_network")
        else:
            threestudio.warn(
                f"create_from: {other.__class__.__name__} has no texture network to copy"
            )

    def grid_points_in(self, bbox: Float[Tensor, "2 3"]) -> Float[Tensor, "Nv 3"]:
        return scale_tensor(
            self.isosurface_helper.grid_vertices, self.isosurface_helper.points_range, bbox
        )


def _resolve_threshold(other: BaseImplicitGeometry, field: Float[Tensor, "N 1"]) -> float:
    threshold = other.cfg.isosurface_threshold
    if isinstance(threshold, (int, float)):
        return float(threshold)
    if threshold == "auto":
        above = field[field > 1e-5]
        if above.numel() == 0:
            raise UserError("create_from: isosurface_threshold=auto found no positive field values")
        value = above.mean().item()
        threestudio.info(f"Automatically determined isosurface threshold: {value}")
        return value
    raise ConfigError(f"isosurface_threshold: expected a number or 'auto', got {threshold!r}")


def _grid_level(
    instance: TetrahedraSDFGrid,
    other: BaseImplicitGeometry,
    bbox: Float[Tensor, "2 3"],
    threshold: Optional[float] = None,
) -> Tuple[Float[Tensor, "Nv 1"], Optional[Float[Tensor, "Nv 3"]], float]:
    """``other``'s level (negative inside) and raw deformation at the grid spanning ``bbox``, and
    the threshold used (resolved from the field when not given)."""
    points = instance.grid_points_in(bbox)
    field, deformation = chunk_batch(other.forward_field, 65536, points)
    if threshold is None:
        threshold = _resolve_threshold(other, field)
    level = other.forward_level(field, threshold)
    return level.reshape(-1, 1).float(), deformation, threshold
