"""Score Jacobian Chaining (Wang et al. 2023): a voxel grid of density and 4-channel Stable
Diffusion latents is rendered straight into latent space and trained with the diffusion model's
score (the guidance's ``use_sjc``: Perturb-and-Average Scoring), chained through the renderer's
Jacobian.

Beside the score, SJC's emptiness loss ``log(1 + scale * w)`` on every sample's weight keeps
empty space empty, and an optional depth loss pulls the image centre in front of its border.
Validation and test images are the renders decoded by the guidance's VAE; with
``subpixel_rendering`` the latents are decoded at twice the diffusion model's latent size per
side (4x its latent pixels: a 128x128 latent map, 1024x1024 pixels for Stable Diffusion)."""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, Tensor

# depth given to the empty part of a pixel (SJC's background distance)
BACKGROUND_DEPTH = 10.0


def emptiness_loss(weights: Float[Tensor, "Ns 1"], scale: float) -> Float[Tensor, ""]:
    """SJC's emptiness prior: the mean of ``log(1 + scale * w)`` over the samples' weights, which
    penalises faint density everywhere while saturating for the few samples that make a
    surface."""
    return torch.log(1.0 + scale * weights).mean()


def composite_depth(
    depth: Float[Tensor, "B H W 1"], opacity: Float[Tensor, "B H W 1"]
) -> Float[Tensor, "B H W"]:
    """Depth with the transparent part of each pixel placed at ``BACKGROUND_DEPTH``."""
    return (depth + BACKGROUND_DEPTH * (1.0 - opacity))[..., 0]


def center_depth_loss(
    depth: Float[Tensor, "B H W 1"], opacity: Float[Tensor, "B H W 1"], center_ratio: float
) -> Float[Tensor, ""]:
    """SJC's depth prior (pals-ttic/sjc issue 21): ``sign(x) log|x|`` of
    ``x = mean depth of the centre crop - mean depth of the border``, the centre crop being
    ``center_ratio`` of the height and width. Lower when the centre is nearer than the border.
    (The established threestudio takes ``log(x)``, which is NaN once the centre is nearer; the
    sign-symmetric form keeps descending in the same direction instead.)"""
    comp_depth = composite_depth(depth, opacity)
    h, w = comp_depth.shape[-2:]
    center_h, center_w = int(center_ratio * h), int(center_ratio * w)
    top, left = (h - center_h) // 2, (w - center_w) // 2
    center = comp_depth[..., top : top + center_h, left : left + center_w]
    border_mean = (comp_depth.sum() - center.sum()) / (comp_depth.numel() - center.numel())
    x = center.mean() - border_mean + 1e-12
    return torch.sign(x) * torch.log(x.abs())


def downsample_latents(
    latents: Float[Tensor, "B H W C"], size: int
) -> Float[Tensor, "B C size size"]:
    """The rendered latent image resized (bilinear, as the decoder's input) to ``size``."""
    return F.interpolate(
        latents.permute(0, 3, 1, 2), (size, size), mode="bilinear", align_corners=False
    )


@threestudio.register("sjc-system")
class ScoreJacobianChaining(BaseLift3DSystem):
    @dataclass
    class Config(BaseLift3DSystem.Config):
        # decode validation/test renders at twice the diffusion model's latent size per side
        # (4x the latent pixels; 128x128 latents for Stable Diffusion) instead of at its size
        subpixel_rendering: bool = True

    cfg: Config

    # ---------- training ----------

    def loss_setting(self, key: str) -> float:
        if key not in self.cfg.loss:
            raise ConfigError(f"system.loss.{key} is not set (SJC needs it for its priors)")
        return self.C(self.cfg.loss[key])

    def regularizers(self, out: Dict[str, Any]) -> Dict[str, Any]:
        terms = {}
        if self.lambda_of("emptiness", default=0) > 0:
            terms["loss_emptiness"] = emptiness_loss(
                out["weights"], self.loss_setting("emptiness_scale")
            )
        if self.lambda_of("depth", default=0) > 0:
            terms["loss_depth"] = center_depth_loss(
                out["depth"], out["opacity"], self.loss_setting("center_ratio")
            )
        return terms

    def training_step(self, batch, batch_idx):
        out = self(batch)
        # the render is the latent image itself: no VAE encoding
        guidance_out = self.guidance(
            out["comp_rgb"], self.prompt_utils, **batch, rgb_as_latents=True
        )
        terms = self.guidance_terms(guidance_out)
        terms.update(self.regularizers(out))
        return {"loss": self.weighted_loss(terms)}

    # ---------- decoding renders for validation and test ----------

    def latent_decoder(self):
        """The guidance, whose VAE decodes renders: built here for --test/--export from a
        checkpoint, where training (which builds it otherwise) does not run."""
        guidance = self.guidance
        if guidance is None:
            guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)
            self.guidance = guidance
        return guidance

    def decoder_input(self, comp_rgb: Float[Tensor, "B H W C"]) -> Float[Tensor, "B C h w"]:
        """The latents the VAE decodes: the render resized to the decoding size."""
        decoder = self.latent_decoder()
        factor = 2 if self.cfg.subpixel_rendering else 1
        return downsample_latents(comp_rgb, decoder.latent_size * factor)

    def decode(self, comp_rgb: Float[Tensor, "B H W C"]) -> Float[Tensor, "B h w 3"]:
        latents = self.decoder_input(comp_rgb)
        with torch.no_grad():
            return self.latent_decoder().decode_latents(latents).permute(0, 2, 3, 1)

    def eval_rgb(self, out: Dict[str, Any]) -> Tensor:
        return self.decode(out["comp_rgb"])[0]

    @staticmethod
    def depth_image(depth: Float[Tensor, "H W"]) -> np.ndarray:
        """Depth mapped to [0, 1] on a log scale (the background depth maps to 1)."""
        d = depth.detach().cpu().numpy()
        return np.log(1.0 + d + 1e-12) / np.log(1.0 + BACKGROUND_DEPTH)

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        index = int(batch["index"][0])
        depth = self.depth_image(composite_depth(out["depth"], out["opacity"])[0])
        items = self.eval_image_items(out, batch) + [
            {
                "type": "grayscale",
                "img": depth,
                "kwargs": {"cmap": "Spectral", "data_range": (0, 1)},
            }
        ]
        self.save_image_grid(f"it{self.true_global_step}-{index}.png", items, align=512)

    def test_step(self, batch, batch_idx):
        out = self(batch)
        index = int(batch["index"][0])
        self.save_image_grid(
            f"it{self.true_global_step}-test/{index}.png",
            self.eval_image_items(out, batch),
            align=512,
        )
