"""Zero-1-to-3 / Stable Zero123 (Liu et al. 2023): one image lifted to 3D.

Each training step renders the reference view (``single-image-datamodule``'s batch) for the
reference-view RGB, mask, depth and normal losses, and a random novel view (its
``random_camera`` sub-batch) scored by the Zero-1-to-3 guidance, which turns the novel camera
into Zero-1-to-3's relative angles against the reference camera (``camera_embedding`` of
``zero123-guidance``). Each substep's terms are prefixed ``loss_ref_`` / ``loss_zero123_`` in the
log and weighted by ``system.loss.lambda_<name>`` without the prefix, as established."""

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.errors import ConfigError
from threestudio.utils.loss import binary_entropy, normal_smoothness_2d
from threestudio.utils.ops import dot
from threestudio.utils.typing import Any, Dict, Float, Tensor


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


@threestudio.register("zero123-system")
class Zero123(BaseLift3DSystem):
    @dataclass
    class Config(BaseLift3DSystem.Config):
        # ref_only_steps: steps that use the reference view only; guidance_eval: every how many
        # steps to save the guidance's denoising panels (0: never); ref_or_zero123 ("accumulate":
        # both every step, "alternate": the reference view every n_ref steps, the novel view
        # otherwise) and n_ref as in the first published config
        freq: dict = field(default_factory=dict)
        # a mesh refinement stage: no volume regularisers (orient, sparsity, opaque, normal
        # smoothness); the mesh's normal consistency / Laplacian terms instead
        refinement: bool = False

    cfg: Config

    def freq_of(self, key: str, default: Any) -> Any:
        return self.cfg.freq.get(key, default)

    # ---------- one substep: the reference view or a novel view ----------

    def reference_terms(self, out: Dict[str, Any], batch: Dict[str, Any]) -> Dict[str, Tensor]:
        terms = {}
        gt_mask = batch["mask"]
        mask = gt_mask[..., 0] > 0.5
        # the reference colour on the rendered background outside the mask
        gt_rgb = batch["rgb"] * gt_mask.float() + out["comp_rgb_bg"] * (1 - gt_mask.float())
        terms["loss_rgb"] = F.mse_loss(gt_rgb, out["comp_rgb"])
        terms["loss_mask"] = F.mse_loss(gt_mask.float(), out["opacity"])
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

    def regularizer_terms(self, out: Dict[str, Any], guidance: str) -> Dict[str, Tensor]:
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
        if guidance != "ref" and self.lambda_of("sparsity", 0) > 0:
            terms["loss_sparsity"] = (out["opacity"] ** 2 + 0.01).sqrt().mean()
        if self.lambda_of("opaque", 0) > 0:
            terms["loss_opaque"] = binary_entropy(out["opacity"], eps=1.0e-3)
        return terms

    def novel_view_batch(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The random camera with a random background, white for half the items (Zero-1-to-3 was
        trained on white backgrounds), and a random ambient ratio in [0.1, 1]."""
        novel = dict(batch["random_camera"])
        n = novel["rays_o"].shape[0]
        white = (torch.rand(n, 1, device=self.device) > 0.5).float()
        novel["bg_color"] = torch.rand(n, 3, device=self.device) * (1 - white) + white
        novel["ambient_ratio"] = 0.1 + 0.9 * random.random()
        return novel

    def training_substep(self, batch: Dict[str, Any], guidance: str) -> Tensor:
        """``guidance`` is "ref" (the reference view) or "zero123" (a novel view)."""
        if guidance == "ref":
            batch = dict(batch, ambient_ratio=1.0, shading="diffuse", bg_color=None)
        else:
            batch = self.novel_view_batch(batch)
        out = self(batch)
        if guidance == "ref":
            terms = self.reference_terms(out, batch)
        else:
            every = self.freq_of("guidance_eval", 0)
            guidance_eval = every > 0 and self.true_global_step % every == 0
            guidance_out = self.guidance(
                out["comp_rgb"], None, **batch, rgb_as_latents=False, guidance_eval=guidance_eval
            )
            terms = self.guidance_terms(guidance_out)
            if guidance_eval and "eval" in guidance_out:
                self.save_guidance_eval(out["comp_rgb"].detach(), guidance_out["eval"])
        terms.update(self.regularizer_terms(out, guidance))
        return self.weighted_loss(terms, prefix=f"train_{guidance}")

    def save_guidance_eval(self, rgb: Float[Tensor, "B H W 3"], panels: Dict[str, Any]) -> str:
        """it<step>-train.png: the novel-view renders beside the guidance's noisy input, one-step
        denoised, one-step original and fully denoised images (batch items stacked downwards,
        each panel resized to the render's size)."""
        n = int(panels["bs"])
        height, width = rgb.shape[1:3]

        def column(images: Tensor) -> Tensor:
            images = F.interpolate(
                images[:n].permute(0, 3, 1, 2).float(),
                (height, width),
                mode="bilinear",
                align_corners=False,
            ).permute(0, 2, 3, 1)
            return images.reshape(-1, width, images.shape[-1])

        keys = ("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final")
        return self.save_image_grid(
            f"it{self.true_global_step}-train.png",
            [{"type": "rgb", "img": column(rgb), "kwargs": {"data_format": "HWC"}}]
            + [
                {"type": "rgb", "img": column(panels[k]), "kwargs": {"data_format": "HWC"}}
                for k in keys
            ],
        )

    def training_step(self, batch, batch_idx):
        mode = self.freq_of("ref_or_zero123", "accumulate")
        ref_only = self.true_global_step < self.freq_of("ref_only_steps", 0)
        if mode == "accumulate":
            do_ref, do_novel = True, not ref_only
        elif mode == "alternate":
            do_ref = ref_only or self.true_global_step % self.freq_of("n_ref", 2) == 0
            do_novel = not do_ref
        else:
            raise ConfigError(f"system.freq.ref_or_zero123={mode}: use 'accumulate' or 'alternate'")
        loss = 0.0
        if do_novel:
            loss = loss + self.training_substep(batch, "zero123")
        if do_ref:
            loss = loss + self.training_substep(batch, "ref")
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss}
