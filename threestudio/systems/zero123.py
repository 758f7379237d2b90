"""Zero-1-to-3 / Stable Zero123 (Liu et al. 2023): one image lifted to 3D.

Each training step renders the reference view (``single-image-datamodule``'s batch) for the
reference-view RGB, mask, depth and normal losses, and a random novel view (its
``random_camera`` sub-batch) scored by the Zero-1-to-3 guidance, which turns the novel camera
into Zero-1-to-3's relative angles against the reference camera (``camera_embedding`` of
``zero123-guidance``). Each substep's terms are prefixed ``loss_ref_`` / ``loss_zero123_`` in the
log and weighted by ``system.loss.lambda_<name>`` without the prefix, as established. The
reference-view losses and the regularisers are ``ReferenceViewLosses``
(``threestudio/systems/reference_view.py``), shared with ``magic123-system``."""

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.systems.reference_view import (  # noqa: F401 (depth losses: their old home)
    ReferenceViewLosses,
    depth_fit_loss,
    depth_rel_loss,
)
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, Tensor


@threestudio.register("zero123-system")
class Zero123(ReferenceViewLosses, BaseLift3DSystem):
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
