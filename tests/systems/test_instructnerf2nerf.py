"""Instruct-NeRF2NeRF system: frames are edited exactly on the established schedule and only
those, the stored edit is the guidance's output for the original photograph and the full render,
later steps fit the edit, and the losses are the hand-computed L1, LPIPS and regularisers."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import threestudio
from threestudio.data.multiview import MultiviewDataModule
from threestudio.models.guidance.instructpix2pix_guidance import InstructPix2PixGuidance
from threestudio.systems.instructnerf2nerf import CHECKPOINT_KEY, InstructNeRF2NeRF
from threestudio.utils.base import BaseObject
from threestudio.utils.config import load_config
from threestudio.utils.paths import REPO_ROOT as REPO

TINY = [
    "data.train_downsample_resolution=4",  # 16x16
    "data.eval_downsample_resolution=2",  # 16x16
    "system.renderer.base_renderer.num_samples_per_ray=16",
    "system.renderer.patch_size=8",
    "system.renderer.base_renderer.grid_prune=false",  # no occupancy grid (no trainer updates it)
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.perceptual_loss.random_weights=true",
    "system.perceptual_loss.use_dropout=false",
    "system.prompt_processor_type=''",  # no text encoder: the capture guidance ignores prompts
    "system.guidance_type=test-in2n-capture-guidance",
]


@threestudio.register("test-in2n-capture-guidance")
class CaptureEditGuidance(BaseObject):
    """Records each edit request; its edit of call k is ``0.5 * cond_rgb.flip(-1) + 0.01 * k``
    (so the stored image shows which call made it and from which photograph)."""

    @dataclass
    class Config(InstructPix2PixGuidance.Config):  # the published keys, nothing loaded
        pass

    cfg: Config

    def configure(self) -> None:
        self.calls = []

    def __call__(self, rgb, cond_rgb, prompt_utils, **kwargs):
        edit = 0.5 * cond_rgb.flip(-1) + 0.01 * (len(self.calls) + 1)
        self.calls.append(
            {
                "rgb": rgb.detach().clone(),
                "cond_rgb": cond_rgb.detach().clone(),
                "edit": edit.clone(),
                "kwargs": kwargs,
            }
        )
        return {"edit_images": edit}


def build(cli=()):
    cfg = load_config(f"{REPO}/configs/instructnerf2nerf.yaml", cli_args=TINY + list(cli))
    system = threestudio.find(cfg.system_type)(cfg.system).train()
    system._build_members = True  # as once fitting starts: the guidance is built on first use
    dm = MultiviewDataModule(cfg.data)
    dm.setup("fit")
    return system, dm.train_dataset


@pytest.fixture
def at_step(monkeypatch):
    """Run a system at a given global step (no trainer): ``system._test_step = s``."""
    monkeypatch.setattr(
        InstructNeRF2NeRF, "true_global_step", property(lambda self: self._test_step)
    )


def train_at(system, batch, step):
    """One training step at ``step``, after the update hooks the trainer runs (the published
    material is ambient-only until step 9999999, so renders are deterministic)."""
    system._test_step = step
    system.do_update_step(0, step)
    return system.training_step(batch, step)


def frame_batch(dataset, index):
    out = {k: v[None] if torch.is_tensor(v) else v for k, v in dataset.frames.item(index).items()}
    out.update(height=dataset.frame_h, width=dataset.frame_w)
    return out


# the frame drawn at each step 0..16 and, worked out by hand from the established rule (after
# start_editing_step=3: a frame without an edit, or any frame on a multiple of 4), the edits
FRAMES = [0, 1, 0, 2, 1, 1, 0, 3, 2, 0, 1, 4, 0, 0, 2, 3, 1]
EDITS = [(4, 1), (6, 0), (7, 3), (8, 2), (11, 4), (12, 0), (16, 1)]


def test_frames_are_edited_on_the_schedule_and_only_those(at_step):
    torch.manual_seed(0)
    system, dataset = build(["system.start_editing_step=3", "system.per_editing_step=4"])
    originals = dataset.frames.gt_rgb.clone()
    seen = []
    for step, index in enumerate(FRAMES):
        before = len(system.guidance.calls)
        train_at(system, frame_batch(dataset, index), step)
        if len(system.guidance.calls) > before:
            seen.append((step, index))
    assert seen == EDITS
    calls = system.guidance.calls
    # each edit starts from the full render of the view (the patch renderer in eval mode: its
    # training renders are 4x coarser with a sharp patch) and is conditioned on the frame's
    # original photograph, also when it re-edits an edited frame (no parameter moved: no
    # optimiser ran)
    assert system.renderer.training  # back to training mode afterwards
    system.renderer.eval()
    with torch.no_grad():
        for (step, index), call in zip(EDITS, calls):
            full = system(frame_batch(dataset, index))["comp_rgb"]
            assert torch.allclose(call["rgb"], full, atol=1e-6), (step, index)
            assert torch.equal(call["cond_rgb"], originals[index][None]), (step, index)
        system.renderer.train()
        patchy = system(frame_batch(dataset, 0))["comp_rgb"]
        assert not torch.allclose(patchy, calls[1]["rgb"], atol=1e-4)
    # the stored target of each edited frame is the guidance's last edit of it; frames never
    # drawn after step 3 (5, ...) have none, and the dataset's photographs are untouched
    last_call = {index: k for k, (_, index) in enumerate(EDITS)}
    assert sorted(system.edit_frames) == [0, 1, 2, 3, 4]
    for index, k in last_call.items():
        assert torch.equal(system.edit_frames[index], calls[k]["edit"].cpu())
        assert torch.equal(system.target_rgb(frame_batch(dataset, index)), calls[k]["edit"])
    assert torch.equal(system.target_rgb(frame_batch(dataset, 5)), originals[5][None])
    assert torch.equal(dataset.frames.gt_rgb, originals)
    # the re-edit of frame 0 at step 12 replaced the edit of step 6
    assert not torch.equal(calls[1]["edit"], calls[5]["edit"])


def test_no_edits_before_the_start_or_without_a_period(at_step):
    system, dataset = build(["system.start_editing_step=600"])
    for step in (0, 599, 600):
        train_at(system, frame_batch(dataset, 2), step)
    assert system.guidance.calls == [] and system.edit_frames == {}
    train_at(system, frame_batch(dataset, 2), 601)
    assert len(system.guidance.calls) == 1 and list(system.edit_frames) == [2]
    # per_editing_step=0 turns editing off
    system, dataset = build(["system.start_editing_step=0", "system.per_editing_step=0"])
    train_at(system, frame_batch(dataset, 1), 10)
    assert system.guidance.calls == []


def test_losses_by_hand(at_step, monkeypatch):
    torch.manual_seed(0)
    system, dataset = build(["system.start_editing_step=5", "system.per_editing_step=10"])
    batch = frame_batch(dataset, 3)
    with torch.no_grad():
        out = system(batch)  # one fixed render, returned by every forward below
    monkeypatch.setattr(system, "forward", lambda b: out)

    def loss_at(step):
        return float(train_at(system, batch, step)["loss"])

    def by_hand(target):
        rgb = out["comp_rgb"].numpy().astype(np.float64)
        l1 = np.abs(rgb - target.numpy()).mean()
        p = float(
            system.perceptual_loss(
                out["comp_rgb"].permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
            ).sum()
        )
        opacity = out["opacity"].numpy().astype(np.float64)
        sparsity = np.sqrt(opacity**2 + 0.01).mean()
        x = np.clip(opacity, 1e-3, 1 - 1e-3)
        opaque = -(x * np.log(x) + (1 - x) * np.log(1 - x)).mean()
        normal_dot_dir = (out["normal"] * out["t_dirs"]).sum(-1, keepdim=True).clamp_min(0)
        orient = float((out["weights"] * normal_dot_dir**2).sum() / (out["opacity"] > 0).sum())
        # lambda_orient [0, 10.0, 1000., 5000.0]: its end step is a float, so it counts epochs
        # (as established): 10 all through the first epoch
        return 10 * l1 + 10 * p + 10 * orient + sparsity + opaque

    photo = batch["gt_rgb"]
    assert loss_at(0) == pytest.approx(by_hand(photo), rel=1e-5)
    # step 6 edits frame 3 but still fits the photograph (the target it had at the step's start)
    assert loss_at(6) == pytest.approx(by_hand(photo), rel=1e-5)
    edit = system.guidance.calls[0]["edit"]
    assert not torch.allclose(edit, photo)
    # later steps fit the edit
    assert loss_at(7) == pytest.approx(by_hand(edit), rel=1e-5)


def test_validation_shows_the_current_target_and_edits_travel_with_checkpoints(at_step, tmp_path):
    system, dataset = build(["system.start_editing_step=0"])
    train_at(system, frame_batch(dataset, 4), 1)
    saved = {}
    system.on_save_checkpoint(saved)
    assert torch.equal(saved[CHECKPOINT_KEY][4], system.edit_frames[4])
    fresh, _ = build()
    fresh.on_load_checkpoint(saved)
    assert list(fresh.edit_frames) == [4]
    assert torch.equal(fresh.edit_frames[4], system.edit_frames[4])

    # the validation grid: render, normal, opacity, then the frame's target (here its edit);
    # with every 2nd frame evaluated, evaluation item 2 is the file's frame 4
    cfg = load_config(
        f"{REPO}/configs/instructnerf2nerf.yaml", cli_args=TINY + ["data.eval_data_interval=2"]
    )
    dm = MultiviewDataModule(cfg.data)
    dm.setup("validate")
    val = next(b for i, b in enumerate(dm.val_dataloader()) if i == 2)
    system.normalize_batch(val)
    assert val["index"].tolist() == [2] and val["file_index"].tolist() == [4]
    items = {}
    system.save_image_grid = lambda name, panels, **kw: items.update(name=name, panels=panels)
    system.renderer.eval()
    with torch.no_grad():
        system.validation_step(val, 0)
    assert items["name"] == "it1-2.png"
    assert [p["type"] for p in items["panels"]] == ["rgb", "rgb", "grayscale", "rgb"]
    assert torch.equal(items["panels"][-1]["img"], system.edit_frames[4][0])
