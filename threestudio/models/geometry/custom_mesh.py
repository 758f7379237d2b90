"""A fixed, user-supplied mesh (texturing a given shape, e.g. TEXTure/Fantasia3D-style appearance
stages): loaded from ``shape_init: mesh:path`` with trimesh, rotated so its ``up``/``front`` axes
become +z/+x, centred and scaled into the box; only its texture field (encoding + MLP) learns."""

from dataclasses import dataclass, field

import threestudio
from threestudio.models.geometry.base import (
    BaseExplicitGeometry,
    TextureFieldMixin,
    default_mlp_network_config,
    default_pos_encoding_config,
)
from threestudio.models.geometry.implicit_sdf import load_mesh_for_init
from threestudio.models.mesh import Mesh
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Float, Optional, Tensor


@threestudio.register("custom-mesh")
class CustomMesh(TextureFieldMixin, BaseExplicitGeometry):
    @dataclass
    class Config(BaseExplicitGeometry.Config):
        n_input_dims: int = 3  # coordinates per point
        n_feature_dims: int = 3  # outputs of the texture field
        # the texture field's encoding (tcnn vocabulary)
        pos_encoding_config: dict = field(default_factory=default_pos_encoding_config)
        # the texture field's network
        mlp_network_config: dict = field(default_factory=default_mlp_network_config)
        # "mesh:path/to/mesh.obj" (required; anything trimesh loads)
        shape_init: str = ""
        # the mesh's largest |coordinate| after centring (null: 1.0)
        shape_init_params: Optional[Any] = None
        shape_init_mesh_up: str = "+z"  # the mesh file's up axis, turned to +z
        shape_init_mesh_front: str = "+x"  # the mesh file's front axis, turned to +x

    cfg: Config

    def configure(self) -> None:
        super().configure()
        if not self.cfg.shape_init.startswith("mesh:"):
            raise ConfigError(
                f"custom-mesh needs shape_init: mesh:<path to a mesh file>, got "
                f"{self.cfg.shape_init!r}"
            )
        scale = config_to_primitive(self.cfg.shape_init_params)
        if scale is None:
            scale = 1.0
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise ConfigError(
                "shape_init_params: the scale of the mesh's largest coordinate (a positive "
                f"number), got {scale!r}"
            )
        if scale > self.cfg.radius:
            threestudio.warn(
                f"shape_init_params={scale} is larger than radius={self.cfg.radius}: the mesh "
                "sticks out of the box its texture field covers"
            )
        # centred on its bounding box, largest |coordinate| = scale, up -> +z, front -> +x
        v_pos, t_pos_idx = load_mesh_for_init(
            self.cfg.shape_init[5:],
            float(scale),
            self.cfg.shape_init_mesh_up,
            self.cfg.shape_init_mesh_front,
        )
        # buffers: saved with the weights and moved with the module
        self.v_buffer: Float[Tensor, "Nv 3"]
        self.t_buffer: Tensor
        self.register_buffer("v_buffer", v_pos)
        self.register_buffer("t_buffer", t_pos_idx)
        self.configure_texture_field()
        self.mesh: Optional[Mesh] = None
        self._mesh_key: tuple = ()

    def isosurface(self) -> Mesh:
        # rebuilt when the buffers moved (device change) or were overwritten in place (loaded
        # weights), so cached normals never go stale
        key = (self.v_buffer, self.v_buffer._version, self.t_buffer, self.t_buffer._version)
        if self.mesh is None or any(
            a is not b if isinstance(a, Tensor) else a != b for a, b in zip(key, self._mesh_key)
        ):
            self.mesh = Mesh(v_pos=self.v_buffer, t_pos_idx=self.t_buffer)
            self.mesh.add_extra("bbox", self.bbox)
            self._mesh_key = key
        return self.mesh
