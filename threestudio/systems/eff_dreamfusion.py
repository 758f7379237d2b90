"""Efficient DreamFusion: DreamFusion trained at a higher resolution for the price of a lower one.

The eff-random-camera-datamodule hands each training step the rays of a random sub-lattice of a
larger image; this system renders only those and spreads them over the full image
(``spread_samples``) before the guidance scores it. Everything else, regularisers included, is
DreamFusion's (they act on the rendered rays)."""

from dataclasses import dataclass

import threestudio
from threestudio.data.uncond_eff import spread_samples
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.utils.typing import Any, Dict, Tensor


@threestudio.register("efficient-dreamfusion-system")
class EffDreamFusion(DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        pass

    cfg: Config

    def guidance_input(self, out: Dict[str, Any], batch: Dict[str, Any]) -> Tensor:
        if "sample_rows" not in batch:  # whole images (another datamodule): nothing to spread
            return out["comp_rgb"]
        return spread_samples(
            out["comp_rgb"],
            batch["sample_rows"],
            batch["sample_cols"],
            batch["height"],
            batch["width"],
        )
