"""BaseLift3DSystem with systems written for the established API: guidance and prompt processor
are built exactly once whichever side builds them; collated batches' height/width become ints."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

import threestudio
from threestudio.systems.base import BaseLift3DSystem, BaseSystem
from threestudio.utils.base import BaseObject

BUILT = {"guidance": 0, "trainable": 0, "prompt_processor": 0, "prompt_utils": 0}


@threestudio.register("test-base-counting-guidance")
class CountingGuidance(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        scale: float = 1.0

    cfg: Config

    def configure(self) -> None:
        BUILT["guidance"] += 1


@threestudio.register("test-base-counting-trainable-guidance")
class CountingTrainableGuidance(nn.Module):
    def __init__(self, cfg=None) -> None:
        super().__init__()
        BUILT["trainable"] += 1
        self.weight = nn.Parameter(torch.zeros(1))


@threestudio.register("test-base-counting-prompt-processor")
class CountingPromptProcessor(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        prompt: str = ""

    cfg: Config

    def configure(self) -> None:
        BUILT["prompt_processor"] += 1

    def __call__(self):
        BUILT["prompt_utils"] += 1
        return {"prompt": self.cfg.prompt}


class BuildsInConfigure(BaseLift3DSystem):
    def configure(self) -> None:
        super().configure()
        self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)
        self.prompt_processor = threestudio.find(self.cfg.prompt_processor_type)(
            self.cfg.prompt_processor
        )
        self.prompt_utils = self.prompt_processor()


class BuildsInOnFitStart(BaseLift3DSystem):
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.prompt_processor = threestudio.find(self.cfg.prompt_processor_type)(
            self.cfg.prompt_processor
        )
        self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)


class LeavesItToTheBase(BaseLift3DSystem):
    pass


class UsesTheBasesGuidanceInConfigure(BaseLift3DSystem):
    def configure(self) -> None:
        super().configure()
        self.guidance_weight = self.guidance.weight  # a trainable guidance exists already


def system_cfg(guidance_type="test-base-counting-guidance"):
    return {
        "geometry_type": "volume-grid",
        "geometry": {"grid_size": (4, 4, 4), "normal_type": None},
        "material_type": "no-material",
        "material": {"n_output_dims": 3},
        "background_type": "solid-color-background",
        "renderer_type": "nerf-volume-renderer",
        "renderer": {"num_samples_per_ray": 8, "estimator": "importance"},
        "guidance_type": guidance_type,
        "prompt_processor_type": "test-base-counting-prompt-processor",
        "prompt_processor": {"prompt": "a cube"},
    }


def start_fit(system):
    """The hooks Lightning calls from fit() up to the first training step."""
    system.on_fit_start()
    system.on_train_start()


@pytest.mark.parametrize("system_cls", [BuildsInConfigure, BuildsInOnFitStart, LeavesItToTheBase])
def test_guidance_and_prompt_processor_are_built_once(system_cls):
    for key in BUILT:
        BUILT[key] = 0
    system = system_cls(system_cfg())
    start_fit(system)
    assert isinstance(system.guidance, CountingGuidance)
    assert system.prompt_utils == {"prompt": "a cube"}
    assert isinstance(system.prompt_processor, CountingPromptProcessor)
    assert BUILT == {"guidance": 1, "trainable": 0, "prompt_processor": 1, "prompt_utils": 1}


@pytest.mark.parametrize(
    "system_cls", [BuildsInConfigure, LeavesItToTheBase, UsesTheBasesGuidanceInConfigure]
)
def test_trainable_guidance_is_built_once_before_the_optimiser(system_cls):
    for key in BUILT:
        BUILT[key] = 0
    system = system_cls(system_cfg("test-base-counting-trainable-guidance"))
    # built with the system: its parameters reach the optimiser and the checkpoint
    assert BUILT["trainable"] == 1
    assert "guidance.weight" in system.state_dict()
    start_fit(system)
    assert BUILT["trainable"] == 1


def test_nothing_is_built_outside_fitting():
    for key in BUILT:
        BUILT[key] = 0
    system = LeavesItToTheBase(system_cfg())  # --test / --export: no fit
    assert system.guidance is None and system.prompt_utils is None
    assert BUILT == {"guidance": 0, "trainable": 0, "prompt_processor": 0, "prompt_utils": 0}


def test_collated_height_and_width_become_ints():
    system = BaseSystem({})
    batch = {"height": torch.tensor([32]), "width": torch.tensor([24]), "index": torch.tensor([0])}
    system.on_test_batch_start(batch, 0)  # in place, before the step sees the batch
    out = batch
    assert out["height"] == 32 and isinstance(out["height"], int)
    assert out["width"] == 24 and isinstance(out["width"], int)
    assert torch.is_tensor(out["index"])
