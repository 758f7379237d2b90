"""Control4D (Shao et al. 2023), static scenes: a NeRF of a captured scene edited by a ControlNet.

The scene's views come from ``multiview-camera-datamodule`` (``gt_rgb`` per frame). The
``gan-volume-renderer`` draws a view at a quarter of the resolution and a 2D generator brings it
to full resolution; a PatchGAN discriminator learns to tell the generator's images from the
target views. Each training batch takes two optimiser steps, as established: the generator side
(field, background, generator and encoders; ``system.optimizer``) on the L1, perceptual, KL and
GAN terms plus DreamFusion's regularisers, then the discriminator (``system.optimizer.
optimizer_dis``) on the hinge loss, weighted by ``lambda_D``. Lightning counts both steps, so
``trainer.max_steps`` and the editing steps below count two per batch.

Editing: after ``start_editing_step``, a view without an edit, and every view on steps that are
multiples of ``per_editing_step``, is edited by the guidance (ControlNet on the original view,
starting from the generator's image); the edit replaces that view's target from its next visit
on; the edits are kept in checkpoints (a resumed run goes on with the same targets). Stable
Diffusion and the ControlNet are loaded for the first edit, not when training starts."""

import importlib.util
from dataclasses import dataclass, field

import torch.nn.functional as F

import threestudio
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.systems.instructnerf2nerf import frame_index, resize_to  # shared helpers
from threestudio.systems.utils import parse_optimizer
from threestudio.utils.errors import ConfigError
from threestudio.utils.GAN.loss import discriminator_loss, generator_loss
from threestudio.utils.typing import Any, Dict, Float, List, Tensor, Tuple

CHECKPOINT_KEY = "control4d_edits"  # the edited views in a checkpoint


def rgb_panel(image: Float[Tensor, "H W 3"]) -> Dict[str, Any]:
    return {"type": "rgb", "img": image, "kwargs": {"data_format": "HWC", "data_range": (0, 1)}}


@threestudio.register("control4d-multiview-system")
class Control4D(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        # once editing has started, re-edit a view on steps that are multiples of this (<= 0:
        # never edit)
        per_editing_step: int = 20
        start_editing_step: int = 2000  # edit only after this global step
        # config of the perceptual-loss module (LPIPS, VGG16) behind loss_p: vgg_weights,
        # lpips_weights, random_weights, use_dropout
        perceptual_loss: dict = field(default_factory=dict)

    cfg: Config

    def configure(self) -> None:
        super().configure()
        self.edit_frames: Dict[int, Tensor] = {}  # frame index -> edited image [1, H, W, 3], on CPU
        self.automatic_optimization = False

    # ---------- the guidance: loaded for the first edit ----------

    def build_guidance_and_prompts(
        self, names: Tuple[str, ...] = ("prompt_processor", "prompt_utils", "guidance")
    ) -> None:
        # Stable Diffusion and the ControlNet are only used from start_editing_step on: they are
        # loaded at the first edit (self.guidance is built on first use), not when training
        # starts, and take no memory while the scene is reconstructed
        if not self.editing():
            names = tuple(name for name in names if name != "guidance")
        super().build_guidance_and_prompts(names)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        guidance = self.cfg.guidance
        if (
            self.cfg.per_editing_step > 0
            and self.cfg.guidance_type == "stable-diffusion-controlnet-guidance"
            and guidance.get("control_type", "normal") == "normal"
            and importlib.util.find_spec("controlnet_aux") is None
        ):
            threestudio.warn(
                "system.guidance.control_type=normal estimates normals with controlnet_aux, which "
                f"is not installed: the first edit (after step {self.cfg.start_editing_step}) "
                "will fail; pip install controlnet_aux or set system.guidance.control_type=canny"
            )

    # ---------- the targets and their edits ----------

    def target_of(self, index: int, original: Float[Tensor, "B H W 3"]) -> Tensor:
        """The view's current target: its edit (resized to the view) or the original image."""
        if index not in self.edit_frames:
            return original
        _, H, W, _ = original.shape
        return resize_to(self.edit_frames[index].to(original), H, W)

    def editing(self) -> bool:
        return self.cfg.per_editing_step > 0 and self.true_global_step > self.cfg.start_editing_step

    def maybe_edit(self, index: int, out: Dict[str, Any], original: Tensor) -> None:
        if not self.editing():
            return
        if index in self.edit_frames and self.true_global_step % self.cfg.per_editing_step != 0:
            return
        result = self.guidance(out["comp_gan_rgb"].detach(), original, self.prompt_utils)
        self.edit_frames[index] = result["edit_images"].detach().cpu()

    # ---------- losses ----------

    def perceptual_loss(self, x: Tensor, y: Tensor) -> Tensor:
        # built on first use and kept out of the module tree (a frozen network: not in
        # checkpoints, and --test/--export need no VGG weights)
        module = self.__dict__.get("_perceptual")
        if module is None:
            module = threestudio.find("perceptual-loss")(self.cfg.perceptual_loss)
            module = module.to(x.device).eval()
            object.__setattr__(self, "_perceptual", module)
        return module(x, y)

    def reconstruction_terms(self, out: Dict[str, Any], target: Tensor) -> Dict[str, Any]:
        """The generator side's terms, as established: the lattice L1, the GAN image's L1 to
        the target and to the (quarter-size) volume render, the perceptual term, the latent's
        KL and the GAN term; the level-dependent factors favour the levels that see the
        target."""
        _, H, W, _ = target.shape
        gan_rgb = out["comp_gan_rgb"]
        level = out["generator_level"]
        strong = 1.0 if level == 2 else 0.1
        loss_l1 = F.l1_loss(out["comp_int_rgb"], out["comp_gt_rgb"])
        loss_l1 = loss_l1 + F.l1_loss(gan_rgb, target) * strong
        small = (H // 4, W // 4)
        small_gan = F.interpolate(gan_rgb.permute(0, 3, 1, 2), small, mode="area")
        small_rgb = F.interpolate(out["comp_rgb"].permute(0, 3, 1, 2), small, mode="area")
        loss_l1 = loss_l1 + F.l1_loss(small_gan, small_rgb.detach()) * strong * 0.25
        terms = {
            "loss_l1": loss_l1,
            "loss_kl": out["posterior"].kl().mean(),
            "loss_G": generator_loss(
                self.renderer.discriminator, target.permute(0, 3, 1, 2), gan_rgb.permute(0, 3, 1, 2)
            ),
        }
        if self.lambda_of("p") > 0:
            p_factor = 1.0 if level >= 1 else 0.1
            terms["loss_p"] = (
                self.perceptual_loss(
                    gan_rgb.permute(0, 3, 1, 2).contiguous(),
                    target.permute(0, 3, 1, 2).contiguous(),
                ).sum()
                * p_factor
            )
        else:
            terms["loss_p"] = 0.0
        return terms

    # ---------- training: a generator step, then a discriminator step ----------

    def training_step(self, batch, batch_idx):
        optimizer_g, optimizer_d = self.optimizers()
        index = frame_index(batch)
        original = batch["gt_rgb"]
        target = self.target_of(index, original)
        batch = {**batch, "gt_rgb": target, "multi_level_guidance": True}

        self.toggle_optimizer(optimizer_g)
        out = self(batch)
        self.maybe_edit(index, out, original)
        terms = self.reconstruction_terms(out, target)
        terms.update(self.regularizers(out))
        loss = self.weighted_loss(terms)
        self.manual_backward(loss)
        optimizer_g.step()
        optimizer_g.zero_grad()
        self.untoggle_optimizer(optimizer_g)

        self.toggle_optimizer(optimizer_d)
        loss_D = discriminator_loss(
            self.renderer.discriminator,
            target.permute(0, 3, 1, 2),
            out["comp_gan_rgb"].permute(0, 3, 1, 2),
        ) * self.lambda_of("D")
        self.log("train/loss_D", loss_D)
        self.manual_backward(loss_D)
        optimizer_d.step()
        optimizer_d.zero_grad()
        self.untoggle_optimizer(optimizer_d)
        return {"loss": loss.detach()}

    def configure_optimizers(self):
        if self.cfg.scheduler is not None:
            raise ConfigError(
                "system.scheduler: control4d-multiview-system steps its two optimisers by hand "
                "and takes no scheduler (remove system.scheduler)"
            )
        config = self.cfg.optimizer
        if not config or "optimizer_dis" not in config:
            raise ConfigError(
                "system.optimizer.optimizer_dis is not set: control4d-multiview-system trains the "
                "discriminator with its own optimiser (e.g. {name: Adam, args: {lr: 1.e-5}, "
                "params: {renderer.discriminator: {}}})"
            )
        dis_config = config["optimizer_dis"]
        dis_modules = list((dis_config.get("params") or {}).keys())
        gen_modules = list((config.get("params") or {}).keys())
        optimizer_g = parse_optimizer(config, self, optimised_elsewhere=dis_modules)
        optimizer_d = parse_optimizer(dis_config, self, optimised_elsewhere=gen_modules)
        return [optimizer_g, optimizer_d]

    # ---------- the edits travel with the checkpoint (a resumed run keeps its dataset) ----------

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY] = {int(k): v.clone() for k, v in self.edit_frames.items()}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        edits = checkpoint.get(CHECKPOINT_KEY, {})
        self.edit_frames = {int(k): v.cpu() for k, v in edits.items()}

    # ---------- evaluation ----------

    def eval_rgb(self, out: Dict[str, Any]) -> Tensor:
        return out["comp_gan_rgb"][0]

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        index = frame_index(batch)
        target = self.target_of(index, batch["gt_rgb"])[0]
        # the upsampled volume render, the generator's image (normals, opacity), the target
        items: List[Dict[str, Any]] = [rgb_panel(out["comp_rgb"][0])]
        items += self.eval_image_items(out, batch)
        items.append(rgb_panel(target))
        self.save_image_grid(f"it{self.true_global_step}-{index}.png", items)
