"""Triangle meshes (placeholder: the full Mesh with normals, UVs and losses lands with the
meshes work)."""

from threestudio.utils.typing import Any, Dict, Float, Integer, Tensor


class Mesh:
    def __init__(
        self, v_pos: Float[Tensor, "Nv 3"], t_pos_idx: Integer[Tensor, "Nf 3"], **kwargs
    ) -> None:
        self.v_pos = v_pos
        self.t_pos_idx = t_pos_idx
        self.extras: Dict[str, Any] = {}
        for k, v in kwargs.items():
            self.add_extra(k, v)

    def add_extra(self, k, v) -> None:
        self.extras[k] = v
