"""Magic123 (Qian et al. 2023): one image to 3D with a 2D and a 3D diffusion prior.

Each training step renders the reference view (``single-image-datamodule``'s batch) for the
reference-view losses (RGB, mask as a binary cross-entropy, and the optional depth / normal
terms that ``zero123-system`` shares) and one random novel view (its ``random_camera``
sub-batch), which both priors score: the 2D prior (``guidance``, Stable Diffusion SDS with the
text prompt of ``prompt_processor``) and the 3D prior (``guidance_3d``, Zero-1-to-3 given the
novel camera relative to the reference one). A loss ``loss_X`` of the 2D prior is weighted by
``system.loss.lambda_X`` and the same loss of the 3D prior by ``lambda_3d_X``, as established
(``loss_sd`` -> ``lambda_sd`` and ``lambda_3d_sd``). Stage 1 is a NeRF (``implicit-volume``);
stage 2 (``refinement: true``) a DMTet mesh converted from stage 1's checkpoint
(``geometry_convert_from``), with the mesh regularisers instead of the volume ones."""

from dataclasses import dataclass, field

import threestudio
from threestudio.systems.base import BaseLift3DSystem
from threestudio.systems.reference_view import ReferenceViewLosses
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict

# keys the published HiFA configs weight but the established magic123-system never computes
UNUSED_LOSSES = ("lambda_normal_smoothness_2d", "lambda_z_variance")


def as_3d_prior_outputs(guidance_out: Dict[str, Any]) -> Dict[str, Any]:
    """The 3D prior's outputs under their own names: ``loss_X`` -> ``loss_3d_X`` (weighted by
    ``lambda_3d_X``), every other scalar ``name`` -> ``name_3d``."""
    renamed = {}
    for name, value in guidance_out.items():
        if name.startswith("loss_"):
            renamed["loss_3d_" + name[len("loss_") :]] = value
        else:
            renamed[f"{name}_3d"] = value
    return renamed


@threestudio.register("magic123-system")
class Magic123(ReferenceViewLosses, BaseLift3DSystem):
    mask_loss = "bce"  # as established (zero123-system: the MSE)

    @dataclass
    class Config(BaseLift3DSystem.Config):
        # the DMTet refinement stage: the mesh's normal consistency / Laplacian terms instead of
        # the volume regularisers (orient, sparsity, opaque)
        refinement: bool = False
        # registered name of the 3D prior: zero123-unified-guidance (the published configs),
        # zero123-guidance or stable-zero123-guidance
        guidance_3d_type: str = ""
        guidance_3d: dict = field(default_factory=dict)  # config of the 3D prior

    cfg: Config

    def configure(self) -> None:
        super().configure()
        if not self.cfg.guidance_3d_type:
            raise ConfigError("system.guidance_3d_type is not set (e.g. zero123-unified-guidance)")
        for key in UNUSED_LOSSES:
            if self.cfg.loss.get(key, 0) not in (0, 0.0):
                threestudio.warn(
                    f"system.loss.{key} is not used by magic123-system (nor by the established "
                    "one); ignored"
                )

    # ---------- the 3D prior: built once, when training starts (never for --test/--export) ----

    def build_guidance_3d(self) -> Any:
        if getattr(self, "guidance_3d", None) is None:
            self.guidance_3d = threestudio.find(self.cfg.guidance_3d_type)(self.cfg.guidance_3d)
        return self.guidance_3d

    def on_train_start(self) -> None:
        # before the restored random state is applied (loading models draws random numbers)
        self.build_guidance_3d()
        super().on_train_start()

    # ---------- one step ----------

    def training_step(self, batch, batch_idx):
        out_ref = self(batch)
        novel = batch["random_camera"]
        out = self(novel)
        guidance_out = self.guidance(
            out["comp_rgb"], self.prompt_utils, **novel, rgb_as_latents=False
        )
        # the 3D prior is conditioned on the reference image, not on the prompt
        guidance_3d_out = self.build_guidance_3d()(out["comp_rgb"], **novel, rgb_as_latents=False)

        terms = self.reference_terms(out_ref, batch)
        terms.update(self.guidance_terms(guidance_out))
        terms.update(self.guidance_terms(as_3d_prior_outputs(guidance_3d_out)))
        terms.update(self.regularizer_terms(out, "novel"))
        loss = self.weighted_loss(terms, prefix="train")
        return {"loss": loss}
