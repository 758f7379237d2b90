"""Zero-1-to-3 in the unified guidance's conventions (the 3D prior of the published Magic123
configs).

The same model, conditioning and camera embedding as ``zero123-guidance``, with the established
unified guidance's SDS: one timestep for the whole batch, the diffusers CFG form
``uncond + s (cond - uncond)``, the weighting ``dreamfusion`` = ``1 - sqrt(alpha_bar)``
(``fantasia3d`` = ``alpha_bar^(1/4) (1 - sqrt(alpha_bar))``, ``uniform`` = 1) and the loss named
``loss_sd``. Only ``guidance_type: sds`` is ported: VSD with Zero-1-to-3 and the returned
1-step / multi-step images are refused with a config error."""

from dataclasses import dataclass

import threestudio
from threestudio.models.guidance.zero123_guidance import Zero123Guidance
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, Optional, Tensor

WEIGHTINGS = ("dreamfusion", "uniform", "fantasia3d")


@threestudio.register("zero123-unified-guidance")
class Zero123UnifiedGuidance(Zero123Guidance):
    weighting_strategies = WEIGHTINGS  # checked when the schedule is set up

    @dataclass
    class Config(Zero123Guidance.Config):
        # a diffusers-layout Zero-1-to-3 folder or hub id (as zero123-guidance)
        pretrained_model_name_or_path: str = "bennyguo/zero123-diffusers"
        half_precision_weights: bool = True  # fp16 weights on CUDA, as established
        guidance_type: str = "sds"  # only "sds" is ported ("vsd" is refused)
        # w(t): dreamfusion = 1 - sqrt(alpha_bar) | fantasia3d = alpha_bar^(1/4) (1 - sqrt(alpha_bar))
        # | uniform = 1 (the established unified guidance's formulas)
        weighting_strategy: str = "dreamfusion"
        cond_image_path: str = ""  # RGBA (on white) or RGB; the published configs set it
        return_rgb_1step_orig: bool = False  # accepted as established; true is refused
        return_rgb_multistep_orig: bool = False  # accepted as established; true is refused
        n_rgb_multistep_orig_steps: int = 4  # accepted as established; unused
        # VSD keys, accepted as established and unused (guidance_type sds)
        vsd_phi_model_name_or_path: Optional[str] = "bennyguo/zero123-diffusers"
        vsd_guidance_scale_phi: float = 1.0  # see vsd_phi_model_name_or_path
        vsd_use_lora: bool = True  # see vsd_phi_model_name_or_path
        vsd_lora_cfg_training: bool = False  # see vsd_phi_model_name_or_path
        vsd_lora_n_timestamp_samples: int = 1  # see vsd_phi_model_name_or_path
        vsd_use_camera_condition: bool = True  # see vsd_phi_model_name_or_path
        vsd_camera_condition_type: Optional[str] = "extrinsics"  # see vsd_phi_model_name_or_path

    cfg: Config

    def configure(self) -> None:
        if self.cfg.guidance_type != "sds":
            raise ConfigError(
                f"guidance_type '{self.cfg.guidance_type}': zero123-unified-guidance supports "
                "only 'sds' here"
            )
        for key in ("return_rgb_1step_orig", "return_rgb_multistep_orig"):
            if getattr(self.cfg, key):
                raise ConfigError(f"{key}: not supported by zero123-unified-guidance here")
        if self.cfg.cfg_form != "uncond":
            raise ConfigError("cfg_form: zero123-unified-guidance uses 'uncond' (diffusers)")
        super().configure()

    def sample_timesteps(self, batch_size: int) -> Tensor:
        # one timestep for the whole batch, as established
        return super().sample_timesteps(1).repeat(batch_size)

    def sds_weight(self, t: Tensor) -> Float[Tensor, "B 1 1 1"]:
        alpha_bar = self.alphas[t].view(-1, 1, 1, 1)
        if self.cfg.weighting_strategy == "dreamfusion":
            return 1 - alpha_bar**0.5
        if self.cfg.weighting_strategy == "fantasia3d":
            return alpha_bar**0.25 * (1 - alpha_bar**0.5)
        return super().sds_weight(t)  # uniform

    def __call__(self, rgb: Float[Tensor, "B H W C"], *args, **kwargs) -> Dict[str, Any]:
        out = super().__call__(rgb, *args, **kwargs)
        out["loss_sd"] = out.pop("loss_sds")  # the unified guidances' name
        return out
