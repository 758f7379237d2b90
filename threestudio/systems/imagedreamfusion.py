"""Image-conditioned DreamFusion: a text-to-image model's SDS on random views, anchored by one
or more posed reference images (the established threestudio's experimental
``image-condition-dreamfusion-system``).

Each training step scores a random view (the ``random_camera`` sub-batch of
``single-image-datamodule`` or ``co3d-datamodule``) with the text-conditioned guidance, once the
step is past ``freq.ref_only_steps``, and renders the reference view (the batch itself) for the
reference-view RGB, mask, depth and normal losses of ``zero123-system``. As established, the
random view is rendered on the background module's own colour with an ambient ratio drawn from
[``ambient_ratio_min``, 1], the reference view fully lit and diffuse; ``freq.n_ref`` is read by
nothing (both views are used every step). With a datamodule that has no reference (the published
refinement stage trains on ``random-camera-datamodule``), every step scores its views alone.
Terms are logged as ``train_ref/loss_*`` and ``train_guidance/loss_*`` and weighted by
``system.loss.lambda_*`` without the prefix."""

import random
from dataclasses import dataclass

import threestudio
from threestudio.systems.zero123 import Zero123
from threestudio.utils.typing import Any, Dict, Float, List, Tensor


def image_normal_smoothness(normal: Float[Tensor, "B H W 3"]) -> Float[Tensor, ""]:
    """Mean squared difference of neighbouring pixels' rendered normals (both image axes)."""
    return (normal[:, 1:] - normal[:, :-1]).square().mean() + (
        normal[:, :, 1:] - normal[:, :, :-1]
    ).square().mean()


@threestudio.register("image-condition-dreamfusion-system")
class ImageConditionDreamFusion(Zero123):
    @dataclass
    class Config(Zero123.Config):
        # the random view's ambient ratio is drawn uniformly from [ambient_ratio_min, 1]
        ambient_ratio_min: float = 0.5

    cfg: Config

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # all_training_images.png: the reference views, as the established saves them
        dataset = getattr(getattr(self.trainer, "datamodule", None), "train_dataset", None)
        images = dataset.get_all_images() if hasattr(dataset, "get_all_images") else None
        if images is not None and len(images) > 0:
            self.save_image_grid(
                "all_training_images.png",
                [
                    {"type": "rgb", "img": image, "kwargs": {"data_format": "HWC"}}
                    for image in images
                ],
            )

    @staticmethod
    def has_reference(batch: Dict[str, Any]) -> bool:
        return "rgb" in batch and "mask" in batch

    def guidance_view_batch(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The random views (the batch itself when the datamodule gives only random views), on
        the background's colour, lit with a random ambient ratio."""
        views = dict(batch["random_camera"] if "random_camera" in batch else batch)
        low = self.cfg.ambient_ratio_min
        views["bg_color"] = None
        views["ambient_ratio"] = low + (1 - low) * random.random()
        return views

    def regularizer_terms(self, out: Dict[str, Any], guidance: str) -> Dict[str, Tensor]:
        terms = super().regularizer_terms(out, guidance)
        # the established keeps the image-space normal smoothness in the refinement stage too
        if self.cfg.refinement and self.lambda_of("normal_smooth", 0) > 0 and "comp_normal" in out:
            terms["loss_normal_smooth"] = image_normal_smoothness(out["comp_normal"])
        return terms

    def training_substep(self, batch: Dict[str, Any], guidance: str) -> Tensor:
        """``guidance`` is "ref" (the reference view) or "guidance" (the random views)."""
        if guidance == "ref":
            views = dict(batch, ambient_ratio=1.0, shading="diffuse", bg_color=None)
        else:
            views = self.guidance_view_batch(batch)
        out = self(views)
        if guidance == "ref":
            terms = self.reference_terms(out, views)
        else:
            every = self.freq_of("guidance_eval", 0)
            guidance_eval = every > 0 and self.true_global_step % every == 0
            guidance_out = self.guidance(
                out["comp_rgb"],
                self.prompt_utils,
                **views,
                rgb_as_latents=False,
                guidance_eval=guidance_eval,
            )
            terms = self.guidance_terms(guidance_out)
            if guidance_eval and "eval" in guidance_out:
                self.save_guidance_eval(out["comp_rgb"].detach(), guidance_out["eval"])
        terms.update(self.regularizer_terms(out, guidance))
        return self.weighted_loss(terms, prefix=f"train_{guidance}")

    def training_step(self, batch, batch_idx):
        has_reference = self.has_reference(batch)
        loss = 0.0
        # as established: the random views from the step after ref_only_steps on
        if self.true_global_step > self.freq_of("ref_only_steps", 0) or not has_reference:
            loss = loss + self.training_substep(batch, "guidance")
        if has_reference:
            loss = loss + self.training_substep(batch, "ref")
        self.log("train/loss", loss, prog_bar=True)
        return {"loss": loss}

    def eval_image_items(self, out: Dict[str, Any], batch: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The view's image (when the batch has one: a capture's test view), the render, its
        normal, depth and opacity."""
        items = super().eval_image_items(out, batch)
        if "depth" in out:
            depth = {"type": "grayscale", "img": out["depth"][0, :, :, 0], "kwargs": {}}
            items.insert(len(items) - 1, depth)
        if "rgb" in batch:
            gt = {"type": "rgb", "img": batch["rgb"][0], "kwargs": {"data_format": "HWC"}}
            items.insert(0, gt)
        return items
