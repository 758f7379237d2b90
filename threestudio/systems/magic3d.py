"""Magic3D (Lin et al. 2023): coarse-to-fine text-to-3D in two stages.

The coarse stage is DreamFusion's: a NeRF (implicit-volume, nerf-volume-renderer) at low
resolution, distilled by SDS, with DreamFusion's regularisers. The refine stage
(``refinement: true``) starts from the coarse checkpoint through ``system.geometry_convert_from``
(the base converts the coarse field into a ``tetrahedra-sdf-grid``, keeping its texture field),
rasterises the extracted mesh at high resolution and regularises that mesh instead: normal
consistency (``lambda_normal_consistency``) and Laplacian smoothness
(``lambda_laplacian_smoothness``). Training, validation, test video and export are the bases'."""

from dataclasses import dataclass

import threestudio
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict


@threestudio.register("magic3d-system")
class Magic3D(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        # the refine stage: the renderer draws a mesh (out["mesh"]) and the mesh regularisers
        # replace the volume ones (orient, sparsity, opaque, z_variance)
        refinement: bool = False

    cfg: Config

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if (
            self.cfg.refinement
            and not self.cfg.geometry_convert_from
            and not self.resumed
            and self.cfg.weights is None
            and getattr(self.geometry.cfg, "shape_init", None) is None
        ):
            threestudio.warn(
                "system.refinement is true but system.geometry_convert_from is not set: the "
                "refine stage starts from an empty grid (pass the coarse stage's "
                "ckpts/last.ckpt)"
            )

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        if not self.cfg.refinement:
            return super().regularizers(out)
        if "mesh" not in out:
            raise ConfigError(
                f"system.refinement is true but system.renderer_type={self.cfg.renderer_type} "
                "renders no mesh (use nvdiff-rasterizer with a tetrahedra-sdf-grid geometry)"
            )
        mesh = out["mesh"]
        terms = {}
        if self.lambda_of("normal_consistency", default=0) > 0:
            terms["loss_normal_consistency"] = mesh.normal_consistency()
        if self.lambda_of("laplacian_smoothness", default=0) > 0:
            terms["loss_laplacian_smoothness"] = mesh.laplacian()
        return terms
