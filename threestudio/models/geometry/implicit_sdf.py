"""A signed distance field: positional encoding + MLPs giving the SDF (negative inside) and
features (NeuS-style stages, Magic3D refinement). The SDF can be initialised to a sphere, an
ellipsoid or a mesh by fitting the network before training."""

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

import threestudio
from threestudio.models.geometry.base import (
    BaseGeometry,
    BaseImplicitGeometry,
    EncodedFieldMixin,
    check_normal_type,
    default_mlp_network_config,
    default_pos_encoding_config,
    finite_difference_gradient,
    wants_shape_init,
)
from threestudio.models.networks import get_encoding, get_mlp
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.mesh_queries import point_triangle_distance2
from threestudio.utils.misc import broadcast, get_rank
from threestudio.utils.typing import Any, Callable, Dict, Float, Int, Optional, Tensor, Tuple, Union

AXES = {
    "+x": (1, 0, 0),
    "+y": (0, 1, 0),
    "+z": (0, 0, 1),
    "-x": (-1, 0, 0),
    "-y": (0, -1, 0),
    "-z": (0, 0, -1),
}


@torch.no_grad()
def mesh_sdf(
    points: Float[Tensor, "N 3"],
    vertices: Float[Tensor, "Nv 3"],
    faces: Int[Tensor, "Nf 3"],
    chunk_pairs: int = 2**22,
) -> Float[Tensor, "N 1"]:
    """Signed distance to a triangle mesh (negative inside), by brute force over all triangles.

    The distance is the exact point-triangle distance; the sign comes from the generalised winding
    number (|w| > 0.5 is inside), which tolerates small holes and either face orientation."""
    tri = vertices[faces]  # [F, 3, 3]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    out = []
    chunk = max(1, chunk_pairs // max(1, faces.shape[0]))
    for i in range(0, points.shape[0], chunk):
        p = points[i : i + chunk, None, :]  # [n, 1, 3]
        dist = point_triangle_distance2(p, a, b, c).min(dim=-1).values.sqrt()
        # winding number: sum of signed solid angles (Van Oosterom-Strackee)
        va, vb, vc = a - p, b - p, c - p
        la, lb, lc = va.norm(dim=-1), vb.norm(dim=-1), vc.norm(dim=-1)
        det = (va * torch.cross(vb, vc, dim=-1)).sum(-1)
        denom = (
            la * lb * lc + (va * vb).sum(-1) * lc + (vb * vc).sum(-1) * la + (vc * va).sum(-1) * lb
        )
        winding = (2.0 * torch.atan2(det, denom)).sum(-1) / (4.0 * math.pi)
        sign = torch.where(winding.abs() > 0.5, -1.0, 1.0)
        out.append((sign * dist)[:, None])
    return torch.cat(out, dim=0)


def load_mesh_for_init(
    path: str, scale: float, up: str, front: str
) -> Tuple[Float[Tensor, "Nv 3"], Int[Tensor, "Nf 3"]]:
    """Load a mesh file, centre it on its bounding box, scale it so its largest coordinate is
    ``scale`` and rotate it so that ``up`` becomes +z and ``front`` becomes +x."""
    if not os.path.exists(path):
        raise UserError(f"shape_init: mesh file not found: {path}")
    if up not in AXES or front not in AXES:
        raise ConfigError(
            f"shape_init_mesh_up/shape_init_mesh_front must be one of {', '.join(AXES)}, "
            f"got '{up}' and '{front}'"
        )
    if up[1] == front[1]:
        raise ConfigError(
            f"shape_init_mesh_up ('{up}') and shape_init_mesh_front ('{front}') must be orthogonal"
        )
    import trimesh

    loaded = trimesh.load(path, force="mesh")
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise UserError(f"shape_init: {path} holds no triangle mesh")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    vertices = vertices - (vertices.min(0) + vertices.max(0)) / 2
    vertices = vertices / np.abs(vertices).max() * scale
    x_axis, z_axis = np.array(AXES[front], float), np.array(AXES[up], float)
    y_axis = np.cross(z_axis, x_axis)
    mesh_to_std = np.stack([x_axis, y_axis, z_axis], axis=0)  # rows: mesh coords of std axes
    vertices = vertices @ mesh_to_std.T
    return (
        torch.as_tensor(vertices, dtype=torch.float32),
        torch.as_tensor(np.asarray(loaded.faces), dtype=torch.long),
    )


def load_shape_init_mesh(cfg) -> Tuple[Float[Tensor, "Nv 3"], Int[Tensor, "Nf 3"]]:
    """The mesh of ``shape_init: mesh:path`` scaled by ``shape_init_params`` and turned by the
    ``shape_init_mesh_up``/``front`` axes (for geometries that fit an SDF to it)."""
    scale = config_to_primitive(cfg.shape_init_params)
    if not isinstance(scale, (int, float)):
        raise ConfigError(
            "shape_init=mesh:... needs shape_init_params: the scale of the mesh's largest "
            f"coordinate (a number), got {scale!r}"
        )
    return load_mesh_for_init(
        cfg.shape_init[5:], float(scale), cfg.shape_init_mesh_up, cfg.shape_init_mesh_front
    )


@threestudio.register("implicit-sdf")
class ImplicitSDF(EncodedFieldMixin, BaseImplicitGeometry):
    @dataclass
    class Config(BaseImplicitGeometry.Config):
        n_input_dims: int = 3  # coordinates per point
        n_feature_dims: int = 3  # outputs of the feature network (0: none)
        # tcnn vocabulary (otype HashGrid, ProgressiveBandHashGrid, Frequency, ...)
        pos_encoding_config: dict = field(default_factory=default_pos_encoding_config)
        # the SDF and the feature networks
        mlp_network_config: dict = field(default_factory=default_mlp_network_config)
        # pred (an MLP) | finite_difference (forward, 3 extra queries) | finite_difference_laplacian
        # (central, 6) | analytic (autograd, also under no_grad)
        normal_type: Optional[str] = "finite_difference"
        # a number, or "progressive": the cell size of the finest active ProgressiveBandHashGrid
        # level (Neuralangelo)
        finite_difference_normal_eps: Union[float, int, str] = 0.01
        # None | "sphere" (params: radius) | "ellipsoid" (params: 3 semi-axes) |
        # "mesh:path/to/mesh.obj" (params: the scale of its largest coordinate)
        shape_init: Optional[str] = None
        shape_init_params: Optional[Any] = None  # see shape_init
        shape_init_mesh_up: str = "+z"  # the mesh file's up axis, turned to +z
        shape_init_mesh_front: str = "+x"  # the mesh file's front axis, turned to +x
        shape_init_steps: int = 1000  # Adam steps of the fit (MSE on random points of the box)
        shape_init_batch_size: int = 10000  # points per fit step
        shape_init_lr: float = 1e-3  # learning rate of the fit
        force_shape_init: bool = False  # fit even when weights are given
        # added to the network output: a number, or "sphere"/"ellipsoid" with sdf_bias_params
        sdf_bias: Union[float, int, str] = 0.0
        sdf_bias_params: Optional[Any] = None  # the sphere's radius or the ellipsoid's semi-axes

        # an SDF has no floaters to remove
        isosurface_remove_outliers: bool = False

    cfg: Config

    def configure(self) -> None:
        super().configure()
        check_normal_type(self.cfg.normal_type)
        self.encoding = get_encoding(self.cfg.n_input_dims, self.cfg.pos_encoding_config)
        self.sdf_network = get_mlp(self.encoding.n_output_dims, 1, self.cfg.mlp_network_config)
        self.configure_heads()
        if self.cfg.isosurface_deformable_grid:
            if self.cfg.isosurface_method != "mt":
                raise ConfigError(
                    "isosurface_deformable_grid needs isosurface_method=mt "
                    f"(got '{self.cfg.isosurface_method}')"
                )
            self.deformation_network = get_mlp(
                self.encoding.n_output_dims, 3, self.cfg.mlp_network_config
            )
        self._check_shape_params(self.cfg.sdf_bias, self.cfg.sdf_bias_params, "sdf_bias")
        if self.cfg.shape_init is not None and not self.cfg.shape_init.startswith("mesh:"):
            self._check_shape_params(self.cfg.shape_init, self.cfg.shape_init_params, "shape_init")
        self.finite_difference_normal_eps: float = self._finite_difference_eps(0)

    # ---- analytic shapes ----

    @staticmethod
    def _check_shape_params(kind: Any, params: Any, key: str) -> None:
        if not isinstance(kind, str):
            return
        params = config_to_primitive(params)
        if kind == "sphere":
            if not isinstance(params, (int, float)):
                raise ConfigError(
                    f"{key}=sphere needs {key}_params: a radius (number), got {params!r}"
                )
        elif kind == "ellipsoid":
            if not (isinstance(params, (list, tuple)) and len(params) == 3):
                raise ConfigError(
                    f"{key}=ellipsoid needs {key}_params: 3 semi-axis lengths, got {params!r}"
                )
        else:
            choices = (
                "sphere, ellipsoid, mesh:<path>"
                if key == "shape_init"
                else "a number, sphere, ellipsoid"
            )
            raise ConfigError(f"{key}: unknown value '{kind}' (use {choices})")

    @staticmethod
    def analytic_sdf(
        kind: str, params: Any, points: Float[Tensor, "*N 3"]
    ) -> Float[Tensor, "*N 1"]:
        params = config_to_primitive(params)
        if kind == "sphere":
            return points.norm(dim=-1, keepdim=True) - float(params)
        if kind == "ellipsoid":
            # a pseudo distance: exact on the surface's axes, zero on the surface
            size = torch.as_tensor(params, dtype=points.dtype, device=points.device)
            return (points / size).norm(dim=-1, keepdim=True) - 1.0
        raise ConfigError(f"unknown analytic shape '{kind}' (use sphere or ellipsoid)")

    def get_shifted_sdf(
        self, points: Float[Tensor, "*N Di"], sdf: Float[Tensor, "*N 1"]
    ) -> Float[Tensor, "*N 1"]:
        if isinstance(self.cfg.sdf_bias, str):
            return sdf + self.analytic_sdf(self.cfg.sdf_bias, self.cfg.sdf_bias_params, points)
        return sdf + float(self.cfg.sdf_bias)

    # ---- shape initialisation ----

    def initialize_shape(self) -> None:
        """Fit the network to ``shape_init``. Called by the system when training starts (once the
        module is on its device), not at construction, so loading a checkpoint costs nothing."""
        if not wants_shape_init(self.cfg):
            return
        if isinstance(self.cfg.sdf_bias, str) or self.cfg.sdf_bias != 0.0:
            threestudio.warn(
                "shape_init and sdf_bias are both set: the bias shifts the fitted shape"
            )

        if self.cfg.shape_init.startswith("mesh:"):
            vertices, faces = load_shape_init_mesh(self.cfg)
            target = self._mesh_sdf_table(vertices.to(self.bbox), faces.to(self.bbox.device))
        else:
            kind, params = self.cfg.shape_init, self.cfg.shape_init_params

            def target(points):
                return self.analytic_sdf(kind, params, points)

        self.fit_sdf(
            target, self.cfg.shape_init_steps, desc=f"Initializing SDF to {self.cfg.shape_init}"
        )

    def _mesh_sdf_table(self, vertices, faces) -> Callable:
        """Ground truth at a fixed pool of points (uniform in the box plus points near the
        surface), so the brute-force mesh distance is computed once, not at every step."""
        n_uniform = 4 * self.cfg.shape_init_batch_size
        r = self.cfg.radius
        uniform = (torch.rand(n_uniform, 3, device=vertices.device) * 2 - 1) * r
        tri = vertices[faces]
        areas = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
        idx = torch.multinomial(areas, n_uniform, replacement=True)
        u, v = torch.rand(2, n_uniform, 1, device=vertices.device)
        flip = (u + v) > 1
        u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
        t = tri[idx]
        surface = t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0])
        near = (surface + torch.randn_like(surface) * 0.02 * r).clamp(-r, r)
        pool = torch.cat([uniform, near], dim=0)
        values = mesh_sdf(pool, vertices, faces)

        def target(points):
            raise AssertionError("the mesh target is sampled from its pool")

        target.pool = (pool, values)  # type: ignore[attr-defined]
        return target

    def fit_sdf(
        self,
        target: Callable[[Float[Tensor, "N 3"]], Float[Tensor, "N 1"]],
        steps: int,
        desc: str = "Fitting SDF",
        lr: Optional[float] = None,
    ) -> float:
        """Fit the SDF network to ``target`` (a function of points, or one carrying a ``pool`` of
        (points, values)) by MSE on random points of the box. Returns the final loss."""
        from tqdm import tqdm

        pool = getattr(target, "pool", None)
        optim = torch.optim.Adam(self.parameters(), lr=lr or self.cfg.shape_init_lr)
        loss_value = float("nan")
        with torch.enable_grad():
            for _ in tqdm(range(steps), desc=desc, disable=get_rank() != 0):
                if pool is not None:
                    idx = torch.randint(0, pool[0].shape[0], (self.cfg.shape_init_batch_size,))
                    points, sdf_gt = (
                        pool[0][idx.to(pool[0].device)],
                        pool[1][idx.to(pool[0].device)],
                    )
                else:
                    points = (
                        torch.rand(self.cfg.shape_init_batch_size, 3, device=self.bbox.device) * 2
                        - 1
                    ) * self.cfg.radius
                    sdf_gt = target(points)
                loss = F.mse_loss(self.forward_sdf(points), sdf_gt)
                optim.zero_grad()
                loss.backward()
                optim.step()
                loss_value = loss.item()
        # every rank fitted with its own random points: agree on rank 0's result
        for param in self.parameters():
            broadcast(param.data, src=0)
        return loss_value

    # ---- field evaluation ----

    def _forward(
        self, points: Float[Tensor, "*N Di"], output_normal: bool, create_graph: bool
    ) -> Dict[str, Tensor]:
        batch_shape = points.shape[:-1]
        enc = self.encode(points)
        sdf = self.get_shifted_sdf(points, self.sdf_network(enc).view(*batch_shape, 1))
        output: Dict[str, Tensor] = {"sdf": sdf, **self.features_from(enc, batch_shape)}
        if output_normal:
            sdf_grad, normal = self._gradient(points, enc, sdf, create_graph)
            output.update({"normal": normal, "shading_normal": normal, "sdf_grad": sdf_grad})
        return output

    def _gradient(
        self,
        points: Float[Tensor, "*N 3"],
        enc: Float[Tensor, "N Denc"],
        sdf: Float[Tensor, "*N 1"],
        grad_enabled: bool,
    ) -> Tuple[Float[Tensor, "*N 3"], Float[Tensor, "*N 3"]]:
        normal_type = self.cfg.normal_type
        if normal_type in ("finite_difference", "finite_difference_laplacian"):
            sdf_grad = finite_difference_gradient(
                self.forward_sdf,
                points,
                self.finite_difference_normal_eps,
                central=normal_type == "finite_difference_laplacian",
                radius=self.cfg.radius,
                field_at_points=sdf,
            )
            normal = F.normalize(sdf_grad, dim=-1)
        elif normal_type == "pred":
            normal = F.normalize(self.normal_network(enc).view(*points.shape[:-1], 3), dim=-1)
            sdf_grad = normal
        elif normal_type == "analytic":
            sdf_grad = torch.autograd.grad(
                sdf, points, grad_outputs=torch.ones_like(sdf), create_graph=grad_enabled
            )[0]
            normal = F.normalize(sdf_grad, dim=-1)
            if not grad_enabled:
                sdf_grad, normal = sdf_grad.detach(), normal.detach()
        else:
            raise ConfigError("normal_type must be set to compute normals")
        return sdf_grad, normal

    def forward_sdf(self, points: Float[Tensor, "*N Di"]) -> Float[Tensor, "*N 1"]:
        sdf = self.sdf_network(self.encode(points)).reshape(*points.shape[:-1], 1)
        return self.get_shifted_sdf(points, sdf)

    def forward_field(
        self, points: Float[Tensor, "*N Di"]
    ) -> Tuple[Float[Tensor, "*N 1"], Optional[Float[Tensor, "*N 3"]]]:
        enc = self.encode(points)
        sdf = self.get_shifted_sdf(points, self.sdf_network(enc).reshape(*points.shape[:-1], 1))
        deformation: Optional[Tensor] = None
        if self.cfg.isosurface_deformable_grid:
            deformation = self.deformation_network(enc).reshape(*points.shape[:-1], 3)
        return sdf, deformation

    def forward_level(
        self, field: Float[Tensor, "*N 1"], threshold: float
    ) -> Float[Tensor, "*N 1"]:
        return field - threshold

    # ---- training schedule ----

    def _finite_difference_eps(self, global_step: int) -> float:
        eps = self.cfg.finite_difference_normal_eps
        if isinstance(eps, (int, float)):
            return float(eps)
        if eps != "progressive":
            raise ConfigError(
                f"finite_difference_normal_eps: expected a number or 'progressive', got {eps!r}"
            )
        enc = config_to_primitive(self.cfg.pos_encoding_config)
        if enc.get("otype") != "ProgressiveBandHashGrid":
            raise ConfigError(
                "finite_difference_normal_eps=progressive needs pos_encoding_config.otype="
                f"ProgressiveBandHashGrid (got {enc.get('otype')})"
            )
        current_level = min(
            enc["start_level"] + max(global_step - enc["start_step"], 0) // enc["update_steps"],
            enc["n_levels"],
        )
        grid_res = enc["base_resolution"] * enc["per_level_scale"] ** (current_level - 1)
        return 2.0 * self.cfg.radius / grid_res

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        eps = self._finite_difference_eps(global_step)
        if eps != self.finite_difference_normal_eps:
            threestudio.debug(f"finite_difference_normal_eps is now {eps}")
        self.finite_difference_normal_eps = eps

    # ---- conversion ----

    @staticmethod
    def create_from(
        other: BaseGeometry,
        cfg: Optional[Union[dict, Any]] = None,
        copy_net: bool = True,
        resolution: int = 64,
        **kwargs,
    ) -> "ImplicitSDF":
        """From an implicit-sdf (weights copied) or an implicit-volume: the volume's density is
        thresholded on a ``resolution``^3 grid, the distance transform of that occupancy gives a
        signed distance, and the new network is fitted to it for ``shape_init_steps`` steps.
        Matching encodings and feature networks are copied first."""
        from threestudio.models.geometry.implicit_volume import ImplicitVolume

        if not isinstance(other, (ImplicitSDF, ImplicitVolume)):
            raise ConfigError(
                f"cannot create implicit-sdf from {other.__class__.__name__} "
                "(use an implicit-sdf or an implicit-volume)"
            )
        instance = ImplicitSDF(cfg, **kwargs)
        if isinstance(other, ImplicitSDF):
            instance.load_state_dict(other.state_dict(), strict=False)
            return instance

        same_encoding = config_to_primitive(
            instance.cfg.pos_encoding_config
        ) == config_to_primitive(other.cfg.pos_encoding_config)
        if copy_net and same_encoding:
            instance.encoding.load_state_dict(other.encoding.state_dict())
            same_mlp = config_to_primitive(instance.cfg.mlp_network_config) == config_to_primitive(
                other.cfg.mlp_network_config
            )
            if same_mlp and instance.cfg.n_feature_dims == other.cfg.n_feature_dims > 0:
                instance.feature_network.load_state_dict(other.feature_network.state_dict())

        sdf_grid = volume_to_sdf_grid(other, resolution)
        bbox = instance.bbox

        def target(points):
            # trilinear lookup; grid axis i is x, j is y, k is z
            coords = (points - bbox[0]) / (bbox[1] - bbox[0]) * 2 - 1
            sampled = F.grid_sample(
                sdf_grid[None, None],
                coords.flip(-1).view(1, 1, 1, -1, 3),
                align_corners=True,
                mode="bilinear",
                padding_mode="border",
            )
            return sampled.view(-1, 1)

        instance.fit_sdf(target, instance.cfg.shape_init_steps, desc="Fitting SDF to the volume")
        return instance


@torch.no_grad()
def volume_to_sdf_grid(volume: BaseImplicitGeometry, resolution: int) -> Float[Tensor, "R R R"]:
    """Signed distance (world units, negative inside) on a ``resolution``^3 grid spanning the
    volume's box (corners included), from the occupancy ``density > isosurface threshold``."""
    from scipy import ndimage

    bbox = volume.bbox
    lin = [torch.linspace(float(bbox[0, d]), float(bbox[1, d]), resolution) for d in range(3)]
    points = torch.stack(torch.meshgrid(*lin, indexing="ij"), dim=-1).reshape(-1, 3).to(bbox)
    density = torch.cat(
        [volume.forward_density(points[i : i + 65536]) for i in range(0, points.shape[0], 65536)]
    ).view(resolution, resolution, resolution)
    threshold = volume.cfg.isosurface_threshold
    if threshold == "auto":
        threshold = density[density > 1e-5].mean().item()
    occupied = (density > float(threshold)).cpu().numpy()
    if not occupied.any() or occupied.all():
        raise UserError(
            "the volume has no surface at its isosurface_threshold "
            f"({volume.cfg.isosurface_threshold}); cannot convert it to an SDF"
        )
    voxel = ((bbox[1] - bbox[0]) / (resolution - 1)).cpu().numpy()
    outside_dist = ndimage.distance_transform_edt(~occupied, sampling=voxel)
    inside_dist = ndimage.distance_transform_edt(occupied, sampling=voxel)
    # the surface lies between an occupied voxel and its free neighbour: half a voxel each side
    half = float(voxel.min()) / 2
    sdf = np.where(occupied, -(inside_dist - half), outside_dist - half)
    return torch.as_tensor(sdf, dtype=torch.float32, device=bbox.device)
