"""Instruct-NeRF2NeRF (Haque et al. 2023): edit a scene by iterative dataset update.

The scene's posed photographs (``multiview-camera-datamodule``) are the training targets, fitted
with L1 and perceptual (LPIPS) losses plus DreamFusion's regularisers. From
``start_editing_step`` on, the frame of a training step is edited by InstructPix2Pix
(``stable-diffusion-instructpix2pix-guidance``), conditioned on the frame's original photograph
and starting from the current render of that view, when that frame has no edit yet or the step
is a multiple of ``per_editing_step``; its edit then replaces it as the target of every later
step that draws the frame. As established, the scene is fitted to the photographs from scratch
during the first ``start_editing_step`` steps, and the step that makes an edit still fits the
target it had before."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.typing import Any, Dict, Float, Tensor

CHECKPOINT_KEY = "instructnerf2nerf_edits"


def frame_index(batch: Dict[str, Any]) -> int:
    """The frame of a one-frame batch (an int in training, a tensor when collated): its position
    in the scene's file where the datamodule says (``file_index``: training and evaluation agree
    whatever their data intervals), else the dataset index (as established)."""
    index = batch.get("file_index", batch["index"])
    return int(index.reshape(-1)[0]) if torch.is_tensor(index) else int(index)


def resize_to(image: Float[Tensor, "B h w 3"], height: int, width: int) -> Float[Tensor, "B H W 3"]:
    if tuple(image.shape[1:3]) == (height, width):
        return image
    return F.interpolate(
        image.permute(0, 3, 1, 2), (height, width), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)


@threestudio.register("instructnerf2nerf-system")
class InstructNeRF2NeRF(BaseLift3DSystem):
    @dataclass
    class Config(BaseLift3DSystem.Config):
        # edit the step's frame every this many steps (and whenever it has no edit yet); 0: never
        per_editing_step: int = 10
        start_editing_step: int = 1000  # edits start after this step (the scene is fitted first)
        # perceptual-loss settings of the LPIPS network behind loss_p (its weight files)
        perceptual_loss: dict = field(default_factory=dict)

    cfg: Config

    def configure(self) -> None:
        super().configure()
        # frame (frame_index) -> its latest edit ([1, H, W, 3] on the CPU), the training target
        self.edit_frames: Dict[int, Tensor] = {}
        # LPIPS is built (its weights loaded) unless loss_p can never count
        self.perceptual_loss = None
        lambda_p = self.cfg.loss.get("lambda_p", 0)
        if not (isinstance(lambda_p, (int, float)) and lambda_p == 0):
            self.perceptual_loss = threestudio.find("perceptual-loss")(self.cfg.perceptual_loss)
            self.perceptual_loss.eval()

    # ---------- the dataset update ----------

    def should_edit(self, index: int, step: int) -> bool:
        """Whether the step ``step`` that draws frame ``index`` edits it (the established
        schedule: after ``start_editing_step``, unedited frames at once, then every
        ``per_editing_step`` steps)."""
        if self.cfg.per_editing_step <= 0 or step <= self.cfg.start_editing_step:
            return False
        return index not in self.edit_frames or step % self.cfg.per_editing_step == 0

    def target_rgb(self, batch: Dict[str, Any]) -> Float[Tensor, "B H W 3"]:
        """The frame's training target: its latest edit, else its photograph."""
        original = batch["gt_rgb"]
        edit = self.edit_frames.get(frame_index(batch))
        if edit is None:
            return original
        return resize_to(edit.to(original), original.shape[1], original.shape[2])

    def edit_frame(self, batch: Dict[str, Any]) -> Float[Tensor, "B H W 3"]:
        """InstructPix2Pix's edit of the current full render of the batch's view, conditioned on
        the original photograph; stored as the frame's new target."""
        was_training = self.renderer.training
        self.renderer.eval()  # the full view (the patch renderer renders patches in training)
        with torch.no_grad():
            render = self(batch)["comp_rgb"]
        self.renderer.train(was_training)
        result = self.guidance(render, batch["gt_rgb"], self.prompt_utils)
        edited = result["edit_images"].detach()
        self.edit_frames[frame_index(batch)] = edited.cpu()
        return edited

    # ---------- training ----------

    def image_terms(
        self, rgb: Float[Tensor, "B H W 3"], target: Float[Tensor, "B H W 3"]
    ) -> Dict[str, Tensor]:
        terms = {"loss_l1": F.l1_loss(rgb, target)}
        if self.perceptual_loss is not None:
            # the images go in as they are, in [0, 1] (as the established)
            terms["loss_p"] = self.perceptual_loss(
                rgb.permute(0, 3, 1, 2).contiguous(), target.permute(0, 3, 1, 2).contiguous()
            ).sum()
        return terms

    def training_step(self, batch, batch_idx):
        target = self.target_rgb(batch)
        out = self(batch)
        if self.should_edit(frame_index(batch), self.true_global_step):
            self.edit_frame(batch)
        terms = self.image_terms(out["comp_rgb"], target)
        # orientation, sparsity and opacity regularisers, exactly as DreamFusion's
        terms.update(DreamFusion.regularizers(self, out))
        self.log("train_params/n_edited_frames", float(len(self.edit_frames)))
        return {"loss": self.weighted_loss(terms)}

    # ---------- evaluation: the render beside the frame's current target ----------

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        target = self.target_rgb(batch)[0]
        items = self.eval_image_items(out, batch) + [
            {"type": "rgb", "img": target, "kwargs": {"data_format": "HWC", "data_range": (0, 1)}}
        ]
        index = (
            int(batch["index"].reshape(-1)[0])
            if torch.is_tensor(batch["index"])
            else batch["index"]
        )
        self.save_image_grid(f"it{self.true_global_step}-{index}.png", items)

    # ---------- the edits travel with the checkpoint (resume continues the same dataset) ----------

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY] = {int(k): v.clone() for k, v in self.edit_frames.items()}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.edit_frames = {int(k): v.cpu() for k, v in checkpoint.get(CHECKPOINT_KEY, {}).items()}
