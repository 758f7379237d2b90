"""Multi-view reconstruction: fit the 3D representation to posed images (``rgb``, ``mask``) that
the datamodule provides. It is the smallest complete use of geometry, material, background,
renderer, evaluation and export, and the project's no-download example."""

from dataclasses import dataclass

import torch.nn.functional as F

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.loss import binary_entropy
from threestudio.utils.ops import binary_cross_entropy


@threestudio.register("reconstruction-system")
class Reconstruction(BaseLift3DSystem):
    @dataclass
    class Config(BaseLift3DSystem.Config):
        pass

    cfg: Config

    def training_step(self, batch, batch_idx):
        out = self(batch)
        terms = {"loss_rgb": F.mse_loss(out["comp_rgb"], batch["rgb"])}
        opacity = out["opacity"].clamp(1e-4, 1 - 1e-4)
        if self.lambda_of("mask", default=0) > 0:
            terms["loss_mask"] = binary_cross_entropy(opacity, batch["mask"])
        if self.lambda_of("opaque", default=0) > 0:
            terms["loss_opaque"] = binary_entropy(opacity)
        return {"loss": self.weighted_loss(terms)}

    def eval_image_items(self, out, batch):
        # the reference image beside the render
        return [
            {"type": "rgb", "img": batch["rgb"][0], "kwargs": {"data_format": "HWC"}}
        ] + super().eval_image_items(out, batch)
