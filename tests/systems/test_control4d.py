"""control4d-multiview-system: each batch takes a generator step then a discriminator step, each
with its own optimiser and its own parameters; edited views replace the dataset's on the
established schedule; the guidance is loaded for the first edit."""

from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

import threestudio
from threestudio.systems.control4d_multiview import Control4D
from threestudio.utils.base import BaseObject
from threestudio.utils.config import load_config
from threestudio.utils.errors import ConfigError
from threestudio.utils.paths import REPO_ROOT as REPO

SIZE = 32  # the discriminator needs at least 24 pixels; the field renders 8x8
ORIGINAL = {0: 0.8, 1: 0.6}  # each frame's photograph: one grey level
BUILT = {"guidance": 0}


@threestudio.register("test-control4d-edit-guidance")
class EditGuidance(BaseObject):
    """Returns edits of one grey level, 0.1 for the first call, 0.2 for the second, ...; records
    what it was given."""

    @dataclass
    class Config(BaseObject.Config):  # the published keys, nothing loaded
        control_type: str = "normal"
        min_step_percent: float = 0.02
        max_step_percent: float = 0.98
        condition_scale: float = 1.5

    cfg: Config

    def configure(self) -> None:
        BUILT["guidance"] += 1
        self.calls = []

    def __call__(self, rgb, cond_rgb, prompt_utils, **kwargs):
        self.calls.append((rgb.shape, round(float(cond_rgb.mean()), 4), prompt_utils))
        return {"edit_images": torch.full_like(rgb, 0.1 * len(self.calls))}


@threestudio.register("test-control4d-prompt-processor")
class Prompts(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        pretrained_model_name_or_path: str = ""
        prompt: str = ""

    cfg: Config

    def __call__(self):
        return "prompt-utils"


class Frames(IterableDataset):
    """Frames 0, 1, 0, 1, ...: a parallel view of the scene box, one grey photograph each."""

    def __iter__(self):
        s = torch.linspace(-1.0, 1.0, SIZE)
        yy, zz = torch.meshgrid(s, s, indexing="ij")
        rays_o = torch.stack([torch.full_like(yy, -3.0), yy, zz], -1)[None]
        rays_d = torch.tensor([1.0, 0.0, 0.0]).expand_as(rays_o).contiguous()
        k = 0
        while True:
            index = k % 2
            yield {
                "index": index,
                "rays_o": rays_o,
                "rays_d": rays_d,
                "light_positions": torch.zeros(1, 3),
                "gt_rgb": torch.full((1, SIZE, SIZE, 3), ORIGINAL[index]),
                "height": SIZE,
                "width": SIZE,
            }
            k += 1


class Recording(Control4D):
    """Records which optimiser steps when (and whose gradients exist then) and each batch's
    target."""

    def configure(self) -> None:
        super().configure()
        self.steps, self.targets = [], []

    def configure_optimizers(self):
        optimizer_g, optimizer_d = super().configure_optimizers()
        discriminator = list(self.renderer.discriminator.parameters())
        others = [
            p for n, p in self.named_parameters() if not n.startswith("renderer.discriminator")
        ]

        def record(name, not_mine):
            def hook(optimizer, args, kwargs):
                stray = any(p.grad is not None for p in not_mine)
                self.steps.append((name, self.trainer.global_step, stray))

            return hook

        optimizer_g.register_step_post_hook(record("G", discriminator))
        optimizer_d.register_step_post_hook(record("D", others))
        return [optimizer_g, optimizer_d]

    def reconstruction_terms(self, out, target):
        self.targets.append(round(float(target.mean()), 4))
        return super().reconstruction_terms(out, target)


def make_system(cli):
    cfg = load_config(
        f"{REPO}/configs/control4d-static.yaml",
        cli_args=[
            "system.prompt_processor.prompt=a wooden cube",
            "system.guidance_type=test-control4d-edit-guidance",
            "system.prompt_processor_type=test-control4d-prompt-processor",
            "system.geometry.pos_encoding_config.n_levels=4",
            "system.geometry.pos_encoding_config.log2_hashmap_size=12",
            "system.renderer.base_renderer.num_samples_per_ray=16",
            "system.perceptual_loss.random_weights=true",
        ]
        + cli,
    )
    return Recording(cfg.system)


def fit(system, batches):
    trainer = pl.Trainer(
        max_steps=2 * batches,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(system, train_dataloaders=DataLoader(Frames(), batch_size=None))
    return trainer


@pytest.mark.slow  # a 5-batch Lightning fit (about 5 s)
def test_generator_then_discriminator_steps_and_the_editing_schedule():
    torch.manual_seed(0)
    system = make_system(["system.start_editing_step=1", "system.per_editing_step=4"])
    before_d = [p.detach().clone() for p in system.renderer.discriminator.parameters()]
    before_g = [p.detach().clone() for p in system.renderer.generator.parameters()]
    BUILT["guidance"] = 0
    trainer = fit(system, batches=5)

    # two optimiser steps per batch, generator first; neither sees the other's gradients
    assert trainer.global_step == 10
    assert [(name, step) for name, step, _ in system.steps] == [
        (name, 2 * k + (name == "D")) for k in range(5) for name in "GD"
    ]
    assert not any(stray for _, _, stray in system.steps)
    optimizer_g, optimizer_d = trainer.optimizers
    assert [g["name"] for g in optimizer_g.param_groups] == [
        "geometry",
        "background",
        "renderer.generator",
        "renderer.local_encoder",
        "renderer.global_encoder",
    ]
    assert [g["name"] for g in optimizer_d.param_groups] == ["renderer.discriminator"]
    assert optimizer_d.param_groups[0]["lr"] == 1e-5
    assert optimizer_g.param_groups[2]["lr"] == 1e-4
    after_d = list(system.renderer.discriminator.parameters())
    after_g = list(system.renderer.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before_d, after_d))
    assert any(not torch.equal(a, b) for a, b in zip(before_g, after_g))

    # edits after step 1: a frame without one, or any frame on a multiple of 4. Batch k is at
    # step 2k and draws frame k % 2: edits at steps 2 (frame 1), 4 (frame 0), 8 (frame 0)
    guidance = system.guidance
    assert BUILT["guidance"] == 1
    assert [cond for _, cond, _ in guidance.calls] == [0.6, 0.8, 0.8]  # the originals
    assert all(shape == (1, SIZE, SIZE, 3) for shape, _, _ in guidance.calls)
    assert all(utils == "prompt-utils" for _, _, utils in guidance.calls)
    # an edit is the target from the frame's next batch on: frame 1's first edit (0.1) at
    # batch 3, frame 0's (0.2) at batch 4; its second (0.3) is kept for later
    assert system.targets == [0.8, 0.6, 0.8, 0.1, 0.2]
    assert sorted(system.edit_frames) == [0, 1]
    assert system.edit_frames[0].device.type == "cpu"
    assert torch.allclose(system.edit_frames[0], torch.full((1, SIZE, SIZE, 3), 0.3))


@pytest.mark.slow  # a 2-batch Lightning fit
def test_no_edit_loads_no_guidance_and_losses_are_finite():
    torch.manual_seed(0)
    system = make_system([])  # the published start_editing_step: 2000
    BUILT["guidance"] = 0
    fit(system, batches=2)
    assert BUILT["guidance"] == 0 and system.edit_frames == {}
    assert system.targets == [0.8, 0.6]
    assert [name for name, _, _ in system.steps] == ["G", "D", "G", "D"]


def test_the_editing_schedule_step_by_step():
    """The schedule without a trainer: the step is set by hand, as for batch k at step 2k."""
    system = make_system(["system.start_editing_step=1", "system.per_editing_step=4"])
    system.guidance = EditGuidance()
    system.prompt_utils = "prompt-utils"
    targets = []
    for k in range(6):
        index = k % 2
        system.set_resume_status(0, 2 * k)
        original = torch.full((1, SIZE, SIZE, 3), ORIGINAL[index])
        targets.append(round(float(system.target_of(index, original).mean()), 4))
        system.maybe_edit(index, {"comp_gan_rgb": torch.rand(1, SIZE, SIZE, 3)}, original)
    # edits at steps 2 (frame 1: new), 4 (frame 0: new), 8 (frame 0: a multiple of 4); not at 6
    # or 10 (frame 1 has one, not a multiple of 4)
    assert [cond for _, cond, _ in system.guidance.calls] == [0.6, 0.8, 0.8]
    assert targets == [0.8, 0.6, 0.8, 0.1, 0.2, 0.1]
    assert torch.allclose(system.edit_frames[0], torch.full((1, SIZE, SIZE, 3), 0.3))
    # an edit of another size is resized to the view
    system.edit_frames[1] = torch.full((1, 8, 8, 3), 0.5)
    assert system.target_of(1, torch.zeros(1, SIZE, SIZE, 3)).shape == (1, SIZE, SIZE, 3)
    # the edits travel with the checkpoint
    checkpoint = {}
    system.on_save_checkpoint(checkpoint)
    restored = make_system([])
    restored.on_load_checkpoint(checkpoint)
    assert sorted(restored.edit_frames) == [0, 1]
    assert torch.equal(restored.edit_frames[0], system.edit_frames[0])
    # per_editing_step <= 0: never
    system.cfg.per_editing_step = 0
    system.set_resume_status(0, 100)
    assert not system.editing()


def test_the_published_table_as_nested_yaml_keeps_its_optimiser_groups(tmp_path):
    """The every-config test writes the published table out with its dotted module names split
    into levels (params: {renderer: {generator: ...}}): the groups are the published ones."""
    import yaml

    from tests.test_published_configs import PUBLISHED, unflatten

    table = dict(PUBLISHED["control4d-static.yaml"])
    path = tmp_path / "control4d-static.yaml"
    path.write_text(yaml.safe_dump(unflatten(table)))
    cfg = load_config(
        str(path),
        cli_args=[
            "data.dataroot=load/scenes/cube",
            "system.prompt_processor.prompt=a cube",
            "system.geometry.pos_encoding_config.n_levels=4",
            "system.geometry.pos_encoding_config.log2_hashmap_size=12",
        ],
    )
    assert "renderer" in cfg.system.optimizer.params  # split into levels
    optimizer_g, optimizer_d = Control4D(cfg.system).configure_optimizers()
    # (yaml.safe_dump sorts the keys: the groups' order is alphabetical)
    assert {g["name"]: g["lr"] for g in optimizer_g.param_groups} == {
        "geometry": 0.01,
        "background": 0.001,
        "renderer.generator": 1e-4,
        "renderer.local_encoder": 1e-4,
        "renderer.global_encoder": 1e-4,
    }
    assert [(g["name"], g["lr"]) for g in optimizer_d.param_groups] == [
        ("renderer.discriminator", 1e-5)
    ]


def test_optimiser_config_errors_name_the_key():
    system = make_system([])
    del system.cfg.optimizer["optimizer_dis"]
    with pytest.raises(ConfigError, match="system.optimizer.optimizer_dis"):
        system.configure_optimizers()
    system = make_system(["system.scheduler={name: ExponentialLR, args: {gamma: 0.9}}"])
    with pytest.raises(ConfigError, match="system.scheduler"):
        system.configure_optimizers()
