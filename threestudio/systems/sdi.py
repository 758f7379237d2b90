"""Score Distillation via Inversion (Lukoianov et al. 2024, https://arxiv.org/abs/2405.15891).

DreamFusion's training step with the SDI guidance (``loss_sdi``) and DreamFusion's regularisers,
plus a naive convexity prior on the rendered normals (``loss_convex``). Validation images also
show what the guidance sees: the inverted noisy latent, its noise and the x0 target.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import threestudio
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, List, Tensor


def convexity_loss(comp_normal: Float[Tensor, "B H W 3"], resolution: int) -> Float[Tensor, ""]:
    """SDI's naive convexity prior: on the normal image downscaled to ``resolution``², the z
    components of the cross products of neighbouring normals (left x right, down x up), whose
    mean is larger where the surface bends outward; the loss is minus their means' sum."""
    normals = F.interpolate(
        comp_normal.permute(0, 3, 1, 2),
        (resolution, resolution),
        mode="bilinear",
        align_corners=False,
    ).permute(0, 2, 3, 1)
    left, right = normals[:, :, :-1], normals[:, :, 1:]
    up, down = normals[:, :-1], normals[:, 1:]
    horizontal = torch.cross(left, right, dim=-1)[..., 2]
    vertical = torch.cross(down, up, dim=-1)[..., 2]
    return -(horizontal.mean() + vertical.mean())


@threestudio.register("sdi-system")
class ScoreDistillationViaInversion(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        convexity_res: int = 8  # size of the normal image the convexity prior looks at

    cfg: Config

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        terms = super().regularizers(out)
        # as established, a weight at or below 1e-6 switches the prior off
        if self.lambda_of("convex", default=0) > 1e-6:
            if "comp_normal" not in out:
                raise ConfigError(
                    "system.loss.lambda_convex > 0 needs rendered normals: set "
                    "system.renderer.return_comp_normal=true and a geometry normal_type"
                )
            terms["loss_convex"] = convexity_loss(out["comp_normal"], self.cfg.convexity_res)
        return terms

    def guidance_panels(self, out: Dict[str, Any], batch: Dict[str, Any]) -> List[Dict[str, Any]]:
        """What the guidance sees of this render: the inverted noisy latent and its noise
        (decoded), the x0 target, and target - render and render - target, at the render's
        size. Empty outside fitting (the guidance is never built for --test)."""
        if self.guidance is None or self.prompt_utils is None:
            return []
        with torch.no_grad():
            info = self.guidance(out["comp_rgb"], self.prompt_utils, **batch, test_info=True)
        rgb = out["comp_rgb"][0]

        def at_render_size(img: Tensor) -> Tensor:
            img = F.interpolate(img.permute(2, 0, 1)[None], rgb.shape[:2], mode="bilinear")
            return img[0].permute(1, 2, 0)

        target = at_render_size(info["target"])
        images = [at_render_size(info["noisy_img"]), at_render_size(info["noise_img"]), target]
        images += [(target - rgb).clamp(0, 1), (rgb - target).clamp(0, 1)]
        return [{"type": "rgb", "img": img, "kwargs": {"data_format": "HWC"}} for img in images]

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        index = int(batch["index"][0])
        items = self.eval_image_items(out, batch) + self.guidance_panels(out, batch)
        self.save_image_grid(f"it{self.true_global_step}-{index}.png", items)
