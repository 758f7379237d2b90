"""What the image-conditioned systems share: the reference-view losses (RGB, mask, optional depth
and normal against the single-image datamodule's reference view) and the regularisers of the
novel views (volume terms in a NeRF stage, mesh terms in a refinement stage).

``zero123-system`` and ``magic123-system`` mix ``ReferenceViewLosses`` in; the systems differ in
how the mask loss is measured (``mask_loss``: Zero-1-to-3 uses the MSE of the opacity, Magic123
the binary cross-entropy, as established) and in the guidance of the novel views."""

import torch
import torch.nn.functional as F

import threestudio
from threestudio.utils.errors import ConfigError
from threestudio.utils.loss import binary_entropy, normal_smoothness_2d
from threestudio.utils.ops import dot
from threestudio.utils.typing import Any, Dict, Float, Tensor

MASK_LOSSES = ("mse", "bce")


def depth_fit_loss(pred: Float[Tensor, "N"], ref: Float[Tensor, "N"]) -> Float[Tensor, ""]:
    """Scale-invariant depth loss: the reference depth is fitted to the prediction by least squares
    (``a * ref + b``, no gradient through the fit) and the MSE of the fit is returned."""
    with torch.no_grad():
        design = torch.stack([ref, torch.ones_like(ref)], dim=-1).float()  # [N, 2]
        solution = torch.linalg.lstsq(design, pred.detach().float()[:, None]).solution
        fitted = (design @ solution)[:, 0].to(pred.dtype)
    return F.mse_loss(pred, fitted)


def depth_rel_loss(pred: Float[Tensor, "N"], ref: Float[Tensor, "N"]) -> Float[Tensor, ""]:
    """Relative depth loss: 1 - Pearson correlation of predicted and reference depth."""
    p = pred - pred.mean()
    r = ref - ref.mean()
    corr = (p * r).sum() / (p.norm() * r.norm()).clamp_min(1e-8)
    return 1 - corr


def mask_fit_loss(
    opacity: Float[Tensor, "B H W 1"], mask: Float[Tensor, "B H W 1"], kind: str
) -> Float[Tensor, ""]:
    """The reference mask against the rendered opacity: ``mse`` or ``bce`` (the opacity clamped
    to [1e-5, 1 - 1e-5])."""
    if kind == "mse":
        return F.mse_loss(mask, opacity)
    if kind == "bce":
        return F.binary_cross_entropy(opacity.clamp(1.0e-5, 1.0 - 1.0e-5), mask)
    raise ValueError(f"mask loss '{kind}' is unknown; use one of {MASK_LOSSES}")


class ReferenceViewLosses:
    """Mixed into a ``BaseLift3DSystem`` whose ``Config`` has ``refinement: bool``."""

    mask_loss: str = "mse"  # how loss_mask is measured (see mask_fit_loss)

    def reference_terms(self, out: Dict[str, Any], batch: Dict[str, Any]) -> Dict[str, Tensor]:
        """loss_rgb and loss_mask, and loss_depth / loss_depth_rel / loss_normal when weighted."""
        terms = {}
        gt_mask = batch["mask"]
        mask = gt_mask[..., 0] > 0.5
        # the reference colour on the rendered background outside the mask
        gt_rgb = batch["rgb"] * gt_mask.float() + out["comp_rgb_bg"] * (1 - gt_mask.float())
        terms["loss_rgb"] = F.mse_loss(gt_rgb, out["comp_rgb"])
        terms["loss_mask"] = mask_fit_loss(out["opacity"], gt_mask.float(), self.mask_loss)
        needs_depth = self.lambda_of("depth", 0) > 0 or self.lambda_of("depth_rel", 0) > 0
        if needs_depth and batch.get("ref_depth") is None:
            # the first published config weights depth without asking the data for it: warn once
            if not getattr(self, "_warned_no_depth", False):
                threestudio.warn(
                    "system.loss.lambda_depth/lambda_depth_rel > 0 but data.requires_depth=false: "
                    "no depth loss (set data.requires_depth=true with <name>_depth.png)"
                )
                self._warned_no_depth = True
        elif needs_depth:
            # the render's depth is [B, H, W, 1], the reference depth [1, H, W] as established
            pred = out["depth"][..., 0][mask]
            ref_depth = batch["ref_depth"]
            ref = (ref_depth[..., 0] if ref_depth.dim() == 4 else ref_depth)[mask]
            if self.lambda_of("depth", 0) > 0:
                terms["loss_depth"] = depth_fit_loss(pred, ref)
            if self.lambda_of("depth_rel", 0) > 0:
                terms["loss_depth_rel"] = depth_rel_loss(pred, ref)
        if self.lambda_of("normal", 0) > 0:
            if batch.get("ref_normal") is None or "comp_normal" not in out:
                raise ConfigError(
                    "system.loss.lambda_normal > 0 needs data.requires_normal=true and "
                    "system.renderer.return_comp_normal=true"
                )
            # as established: the reference normal map's axes are flipped against the render's
            gt_normal = 1 - 2 * batch["ref_normal"][mask]
            pred_normal = 2 * out["comp_normal"][mask] - 1
            terms["loss_normal"] = 1 - F.cosine_similarity(pred_normal, gt_normal, dim=-1).mean()
        return terms

    def regularizer_terms(self, out: Dict[str, Any], view: str) -> Dict[str, Tensor]:
        """The weighted regularisers of one render; ``view`` is "ref" for the reference view
        (which gets no sparsity term) or the name of a novel-view substep."""
        terms = {}
        if self.cfg.refinement:
            if self.lambda_of("normal_consistency", 0) > 0:
                terms["loss_normal_consistency"] = out["mesh"].normal_consistency()
            if self.lambda_of("laplacian_smoothness", 0) > 0:
                terms["loss_laplacian_smoothness"] = out["mesh"].laplacian()
            return terms
        if self.lambda_of("orient", 0) > 0:
            if "normal" not in out:
                raise ConfigError(
                    "system.loss.lambda_orient > 0 needs normals (system.geometry.normal_type)"
                )
            facing_away = dot(out["normal"], out["t_dirs"]).clamp_min(0.0) ** 2
            n_rays = (out["opacity"] > 0).sum().clamp(min=1)
            terms["loss_orient"] = (out["weights"].detach() * facing_away).sum() / n_rays
        if self.lambda_of("normal_smooth", 0) > 0:
            if "comp_normal" not in out:
                raise ConfigError(
                    "system.loss.lambda_normal_smooth > 0 needs system.renderer.return_comp_normal"
                )
            terms["loss_normal_smooth"] = normal_smoothness_2d(out["comp_normal"])
        if self.lambda_of("3d_normal_smooth", 0) > 0:
            if "normal" not in out or "normal_perturb" not in out:
                raise ConfigError(
                    "system.loss.lambda_3d_normal_smooth > 0 needs "
                    "system.renderer.return_normal_perturb=true and normals"
                )
            terms["loss_3d_normal_smooth"] = (out["normal"] - out["normal_perturb"]).abs().mean()
        if view != "ref" and self.lambda_of("sparsity", 0) > 0:
            terms["loss_sparsity"] = (out["opacity"] ** 2 + 0.01).sqrt().mean()
        if self.lambda_of("opaque", 0) > 0:
            terms["loss_opaque"] = binary_entropy(out["opacity"], eps=1.0e-3)
        return terms
