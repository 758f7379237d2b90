"""image-condition-dreamfusion-system: a training step is the reference view's weighted RGB and
mask losses plus, after ref_only_steps, the guidance's SDS on the random views (checked by hand
with a fake guidance); fitting the reference alone lowers its losses, from one image or from a
CO3D capture."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import threestudio
from threestudio.data.co3d import Co3dDataModule
from threestudio.data.image import SingleImageDataModule
from threestudio.models.guidance.stable_diffusion_guidance import StableDiffusionGuidance
from threestudio.utils.base import BaseObject
from threestudio.utils.config import load_config
from threestudio.utils.paths import REPO_ROOT as REPO

SDS_VALUE = 2.0  # the fake guidance's loss_sds

SMALL = [
    "data.random_camera.height=8",
    "data.random_camera.width=8",
    "data.random_camera.batch_size=2",
    "system.renderer.num_samples_per_ray=32",
    "system.renderer.grid_prune=false",  # no occupancy grid (the trainer updates it)
    "system.renderer.randomized=false",  # the same samples in every render of a batch
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.prompt_processor_type=''",  # no text encoder: the fake guidance needs no prompts
    "system.prompt_processor.prompt=an orange sphere",
    "system.guidance_type=test-imagecondition-fake-guidance",
]


@threestudio.register("test-imagecondition-fake-guidance")
class FakeGuidance(BaseObject):
    """Records what the system hands over; its SDS loss is a constant with a gradient path."""

    @dataclass
    class Config(StableDiffusionGuidance.Config):  # the published keys, nothing loaded
        pass

    cfg: Config

    def configure(self) -> None:
        self.calls = []

    def __call__(self, rgb, prompt_utils=None, **kwargs):
        self.calls.append(dict(kwargs, rgb=rgb))
        return {"loss_sds": rgb.sum() * 0.0 + SDS_VALUE}


def system_and_batch(config, cli, datamodule_cls=SingleImageDataModule, size=16):
    cfg = load_config(
        f"{REPO}/configs/experimental/{config}.yaml",
        cli_args=[f"data.height={size}", f"data.width={size}"] + SMALL + cli,
    )
    system = threestudio.find(cfg.system_type)(cfg.system).train()
    system._build_members = True  # as once fitting starts: the guidance is built on first use
    dm = datamodule_cls(cfg.data)
    dm.setup("fit")
    return system, dm.train_dataset.collate(None)


def at_step(system, step):
    system.set_resume_status(0, step)  # true_global_step without a trainer


def reference_loss_by_hand(system, batch, lambda_rgb, lambda_mask):
    with torch.no_grad():
        out = system(dict(batch, ambient_ratio=1.0, shading="diffuse", bg_color=None))
        mask = batch["mask"].float()
        target = batch["rgb"] * mask + out["comp_rgb_bg"] * (1 - mask)
        rgb = F.mse_loss(target, out["comp_rgb"])
        mask_loss = F.mse_loss(mask, out["opacity"])
    return lambda_rgb * float(rgb) + lambda_mask * float(mask_loss)


def test_a_step_is_the_weighted_reference_losses_plus_sds_after_ref_only_steps():
    torch.manual_seed(0)
    # imagecondition.yaml: lambda_rgb 10, lambda_mask 1, lambda_sds 0.1, ref_only_steps 100,
    # every regulariser 0 and the depth weight 0 until step 0 of its schedule's end
    system, batch = system_and_batch(
        "imagecondition", ["data.image_path=load/images/sphere_rgba.png"]
    )
    by_hand = reference_loss_by_hand(system, batch, 10.0, 1.0)
    assert by_hand > 0

    at_step(system, 100)  # not past ref_only_steps: the reference view alone
    with torch.no_grad():
        loss = system.training_step(batch, 0)["loss"]
    assert system.guidance.calls == []
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)

    at_step(system, 101)
    with torch.no_grad():
        loss = system.training_step(batch, 0)["loss"]
    assert float(loss) == pytest.approx(by_hand + 0.1 * SDS_VALUE, rel=1e-5)
    (call,) = system.guidance.calls
    # the guidance scored the random views, on the background's colour, with an ambient ratio in
    # [ambient_ratio_min, 1]
    assert torch.equal(call["rays_o"], batch["random_camera"]["rays_o"])
    assert call["rgb"].shape == (2, 8, 8, 3)
    assert call["bg_color"] is None and 0.5 <= call["ambient_ratio"] <= 1.0


def test_without_a_reference_view_every_step_scores_the_random_views():
    # the published refine stage trains on random-camera-datamodule: no rgb, no mask
    system, batch = system_and_batch(
        "imagecondition", ["data.image_path=load/images/sphere_rgba.png"]
    )
    at_step(system, 0)
    with torch.no_grad():
        loss = system.training_step(batch["random_camera"], 0)["loss"]
    assert len(system.guidance.calls) == 1
    assert float(loss) == pytest.approx(0.1 * SDS_VALUE, rel=1e-6)


def test_sparsity_is_a_random_view_term_orientation_and_opacity_both_views():
    system, batch = system_and_batch(
        "imagecondition",
        [
            "data.image_path=load/images/sphere_rgba.png",
            "system.loss.lambda_sparsity=1.0",
            "system.loss.lambda_opaque=1.0",
            "system.loss.lambda_orient=1.0",
        ],
    )
    with torch.no_grad():
        out = system(dict(batch, ambient_ratio=1.0, shading="diffuse", bg_color=None))
        ref_terms = system.regularizer_terms(out, "ref")
        novel_terms = system.regularizer_terms(out, "guidance")
    assert set(ref_terms) == {"loss_orient", "loss_opaque"}
    assert set(novel_terms) == {"loss_orient", "loss_opaque", "loss_sparsity"}
    opacity = out["opacity"]
    torch.testing.assert_close(novel_terms["loss_sparsity"], (opacity**2 + 0.01).sqrt().mean())
    clamped = opacity.clamp(1e-3, 1 - 1e-3)
    entropy = -(clamped * clamped.log() + (1 - clamped) * (1 - clamped).log()).mean()
    torch.testing.assert_close(ref_terms["loss_opaque"], entropy, rtol=1e-4, atol=1e-6)


def fit_reference(system, batch, steps=30):
    at_step(system, 0)
    optim = torch.optim.Adam(system.parameters(), lr=0.01)

    def losses():
        with torch.no_grad():
            out = system(dict(batch, ambient_ratio=1.0, shading="diffuse", bg_color=None))
            terms = system.reference_terms(out, batch)
        return float(terms["loss_rgb"]), float(terms["loss_mask"])

    before = losses()
    for _ in range(steps):
        optim.zero_grad()
        system.training_step(batch, 0)["loss"].backward()
        optim.step()
    return before, losses()


def test_reference_losses_fall_when_fitting_one_image_alone():
    torch.manual_seed(0)
    system, batch = system_and_batch(
        "imagecondition", ["data.image_path=load/images/sphere_rgba.png"]
    )
    (rgb0, mask0), (rgb1, mask1) = fit_reference(system, batch)
    assert system.guidance.calls == []  # step 0: reference only
    assert rgb1 < 0.5 * rgb0 and mask1 < 0.6 * mask0, (rgb0, rgb1, mask0, mask1)


def test_reference_losses_fall_when_fitting_a_co3d_view_alone():
    torch.manual_seed(0)
    system, batch = system_and_batch(
        "co3d-imagecondition",
        [
            "data.train_views=[2]",
            "data.random_camera.eval_height=8",
            "data.random_camera.eval_width=8",
        ],
        datamodule_cls=Co3dDataModule,
    )
    assert batch["rgb"].shape == (1, 16, 16, 3)
    (rgb0, mask0), (rgb1, mask1) = fit_reference(system, batch)
    assert rgb1 < 0.5 * rgb0 and mask1 < 0.6 * mask0, (rgb0, rgb1, mask0, mask1)


def test_evaluation_images_show_the_view_beside_its_render():
    # a CO3D view batch (a capture's test view has the same keys)
    system, batch = system_and_batch("co3d-imagecondition", [], datamodule_cls=Co3dDataModule)
    system.eval()
    with torch.no_grad():
        out = system(batch)
    items = system.eval_image_items(out, batch)
    kinds = [item["type"] for item in items]
    assert kinds == [
        "rgb",
        "rgb",
        "rgb",
        "grayscale",
        "grayscale",
    ]  # view, render, normal, depth, opacity
    assert torch.equal(items[0]["img"], batch["rgb"][0])
