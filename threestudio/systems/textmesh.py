"""TextMesh (Tsalicoglou et al. 2023), its coarse stage: score distillation (DeepFloyd IF in the
published recipe) into a signed distance field rendered by NeuS-style volume rendering, so that
the surface is the SDF's zero level and a mesh needs no density threshold.

The step is DreamFusion's (its guidance call and regularisers) plus the eikonal loss that keeps
the field a distance function; the learned NeuS sharpness ``inv_std`` is logged."""

from dataclasses import dataclass

import torch

import threestudio
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, Tensor


def eikonal_loss(sdf_grad: Float[Tensor, "*N 3"]) -> Float[Tensor, ""]:
    """Mean of ``(|grad f| - 1)^2``: zero exactly when ``f`` is a distance function (unit
    gradient everywhere it is sampled)."""
    return ((torch.linalg.norm(sdf_grad, ord=2, dim=-1) - 1.0) ** 2).mean()


@threestudio.register("textmesh-system")
class TextMesh(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        pass

    cfg: Config

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        terms = super().regularizers(out)
        if self.lambda_of("eikonal", default=0) > 0:
            if "sdf_grad" not in out:
                raise ConfigError(
                    "system.loss.lambda_eikonal > 0 needs the SDF's gradient: use an SDF "
                    "geometry (implicit-sdf) with a normal_type, rendered by neus-volume-renderer"
                )
            terms["loss_eikonal"] = eikonal_loss(out["sdf_grad"])
        if "inv_std" in out:
            self.log("train/inv_std", float(out["inv_std"].detach()), prog_bar=True)
        return terms
