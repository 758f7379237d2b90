"""Magic123 system: one step sends the reference view to the reference losses and one novel view
to both priors (2D with the prompt, 3D without), weighted by lambda_X / lambda_3d_X; the
guidance_3d_type picks the 3D prior; the reference losses fit the reference image; the refine
stage starts from a coarse trial's checkpoint."""

import math
from dataclasses import dataclass

import pytest
import torch

import threestudio
from threestudio.data.image import SingleImageDataModule
from threestudio.models.guidance.stable_diffusion_unified_guidance import (
    StableDiffusionUnifiedGuidance,
)
from threestudio.models.guidance.zero123_unified_guidance import Zero123UnifiedGuidance
from threestudio.systems.magic123 import Magic123, as_3d_prior_outputs
from threestudio.utils.base import BaseObject
from threestudio.utils.config import dump_config, load_config
from threestudio.utils.paths import REPO_ROOT as REPO

SIZE = [
    "data.height=16",
    "data.width=16",
    "data.random_camera.height=8",
    "data.random_camera.width=8",
    "data.random_camera.batch_size=1",
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.prompt_processor.prompt=an orange sphere",
]
NERF = ["system.renderer.num_samples_per_ray=32", "system.renderer.grid_prune=false"]
FAKES = [
    "system.guidance_type=test-magic123-fake-2d",
    "system.guidance_3d_type=test-magic123-fake-3d",
]
LOSS_2D, LOSS_2D_IMG, LOSS_3D = 2.0, 7.0, 5.0  # the fake priors' constant losses


@threestudio.register("test-magic123-fake-2d")
class Fake2DPrior(BaseObject):
    """Records its inputs; constant loss_sd and loss_sd_img (with a gradient path)."""

    @dataclass
    class Config(StableDiffusionUnifiedGuidance.Config):  # the published keys, nothing loaded
        pass

    cfg: Config

    def configure(self) -> None:
        self.calls = []

    def __call__(self, rgb, prompt_utils, **kwargs):
        self.calls.append(dict(kwargs, rgb=rgb, prompt_utils=prompt_utils))
        zero = rgb.sum() * 0.0
        return {"loss_sd": zero + LOSS_2D, "loss_sd_img": zero + LOSS_2D_IMG, "timestep": 3.0}


@threestudio.register("test-magic123-fake-3d")
class Fake3DPrior(BaseObject):
    """Records its inputs (called as established: no prompt_utils); constant loss_sd."""

    @dataclass
    class Config(Zero123UnifiedGuidance.Config):
        pass

    cfg: Config

    def configure(self) -> None:
        self.calls = []

    def __call__(self, rgb, **kwargs):
        self.calls.append(dict(kwargs, rgb=rgb))
        return {"loss_sd": rgb.sum() * 0.0 + LOSS_3D, "timestep": 4.0}


PROMPTS = object()  # stands in for the prompt processor's output


def system_and_batch(config, cli, drop_3d_keys=()):
    cfg = load_config(f"{REPO}/configs/{config}.yaml", cli_args=SIZE + cli)
    for key in drop_3d_keys:
        del cfg.system.guidance_3d[key]
    system = threestudio.find(cfg.system_type)(cfg.system).train()
    system._build_members = True  # as once fitting starts: the guidance is built on first use
    system.prompt_utils = PROMPTS
    dm = SingleImageDataModule(cfg.data)
    dm.setup("fit")
    return system, next(iter(dm.train_dataloader()))


def record_renders(system):
    renders = []
    forward = system.forward

    def recording(batch):
        renders.append(forward(batch))
        return renders[-1]

    system.forward = recording
    return renders


def test_one_step_weights_the_reference_losses_and_both_priors():
    torch.manual_seed(0)
    system, batch = system_and_batch("magic123-coarse-sd", NERF + FAKES)
    renders = record_renders(system)
    loss = system.training_step(batch, 0)["loss"]
    ref_out, novel_out = renders  # the reference view first, then one novel view
    assert ref_out["comp_rgb"].shape[1:3] == (16, 16)
    assert novel_out["comp_rgb"].shape[1:3] == (8, 8)
    # both priors score the same novel render, at the novel camera; only the 2D one gets prompts
    (call_2d,) = system.guidance.calls
    (call_3d,) = system.guidance_3d.calls
    assert call_2d["rgb"] is novel_out["comp_rgb"] and call_3d["rgb"] is novel_out["comp_rgb"]
    assert call_2d["prompt_utils"] is PROMPTS and "prompt_utils" not in call_3d
    for call in (call_2d, call_3d):
        assert torch.equal(call["elevation"], batch["random_camera"]["elevation"])
        assert torch.equal(call["azimuth"], batch["random_camera"]["azimuth"])
        assert call["rgb_as_latents"] is False
    # the published weights: rgb 1000, mask 100, sd 0.025, 3d_sd 1, sd_img 0 (HiFA off), and
    # orient / sparsity / opaque 0
    with torch.no_grad():
        mask = batch["mask"].float()
        gt_rgb = batch["rgb"] * mask + ref_out["comp_rgb_bg"] * (1 - mask)
        loss_rgb = ((gt_rgb - ref_out["comp_rgb"]) ** 2).mean()
        o = ref_out["opacity"].clamp(1e-5, 1 - 1e-5)
        loss_mask = -(mask * o.log() + (1 - mask) * (1 - o).log()).mean()
    expected = 1000 * loss_rgb + 100 * loss_mask + 0.025 * LOSS_2D + 1.0 * LOSS_3D
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert loss.requires_grad


def test_the_3d_priors_losses_take_the_lambda_3d_weights():
    renamed = as_3d_prior_outputs({"loss_sds": 1.0, "loss_sd": 2.0, "timestep": 3.0})
    assert renamed == {"loss_3d_sds": 1.0, "loss_3d_sd": 2.0, "timestep_3d": 3.0}
    # HiFA: lambda_sd_img (0.00025) now weighs the 2D prior's image loss (the reference terms
    # off, so that the small term is not lost in float32 rounding)
    off = ["system.loss.lambda_rgb=0", "system.loss.lambda_mask=0"]
    system, batch = system_and_batch("magic123-hifa-coarse-sd", NERF + FAKES + off)
    loss = float(system.training_step(batch, 0)["loss"])
    assert loss == pytest.approx(0.025 * LOSS_2D + 0.00025 * LOSS_2D_IMG + LOSS_3D, rel=1e-6)
    # a 3D prior's loss with no lambda_3d_ weight is an error naming the key
    del system.cfg.loss["lambda_3d_sd"]
    with pytest.raises(threestudio.utils.errors.ConfigError, match="lambda_3d_sd"):
        system.training_step(batch, 0)


def test_mask_loss_is_the_binary_cross_entropy_zero123s_the_mse():
    system, batch = system_and_batch("magic123-coarse-sd", NERF + FAKES)
    mask = batch["mask"].float()
    out = {
        "comp_rgb": torch.zeros_like(batch["rgb"]),
        "comp_rgb_bg": torch.zeros_like(batch["rgb"]),
        "opacity": torch.full_like(mask, 0.5),
    }
    # opacity 1/2 everywhere: -log(1/2) per pixel, against the MSE's 1/4 for a binary mask
    assert float(system.reference_terms(out, batch)["loss_mask"]) == pytest.approx(math.log(2))
    zero123 = threestudio.find("zero123-system")
    assert Magic123.mask_loss == "bce" and zero123.mask_loss == "mse"


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    from tests.tiny_pipelines import build_tiny_zero123

    return build_tiny_zero123(tmp_path_factory.mktemp("tiny_zero123"))


@pytest.mark.parametrize(
    "name, loss_key",
    [
        ("zero123-unified-guidance", "loss_3d_sd"),
        ("zero123-guidance", "loss_3d_sds"),
        ("stable-zero123-guidance", "loss_3d_sds"),
    ],
)
def test_guidance_3d_type_builds_that_prior(tiny_zero123, name, loss_key):
    cli = NERF + [
        "system.guidance_type=test-magic123-fake-2d",
        f"system.guidance_3d_type={name}",
        f"system.guidance_3d.pretrained_model_name_or_path={tiny_zero123}",
    ]
    # a key only the unified guidance has
    drop = () if name == "zero123-unified-guidance" else ("guidance_type",)
    system, batch = system_and_batch("magic123-coarse-sd", cli, drop)
    assert getattr(system, "guidance_3d", None) is None  # not built before training starts
    prior = system.build_guidance_3d()
    assert type(prior) is threestudio.find(name) and system.build_guidance_3d() is prior
    # conditioned on the reference image at the reference camera of the config
    assert prior.cfg.cond_image_path == "./load/images/sphere_rgba.png"
    assert prior.cfg.cond_camera_distance == 2.5
    rgb = torch.rand(1, 8, 8, 3, requires_grad=True)
    out = as_3d_prior_outputs(prior(rgb, **batch["random_camera"], rgb_as_latents=False))
    assert loss_key in out and out[loss_key].requires_grad


def test_reference_losses_fall_when_fitting_the_reference_alone():
    torch.manual_seed(0)
    # the priors' weights off: only the reference view is fitted
    cli = NERF + FAKES + ["system.loss.lambda_sd=0", "system.loss.lambda_3d_sd=0"]
    system, batch = system_and_batch("magic123-coarse-sd", cli)

    def ref_losses():
        with torch.no_grad():
            terms = system.reference_terms(system(batch), batch)
        return float(terms["loss_rgb"]), float(terms["loss_mask"])

    rgb0, mask0 = ref_losses()
    optim = torch.optim.Adam(system.parameters(), lr=0.01)
    for _ in range(30):
        optim.zero_grad()
        system.training_step(batch, 0)["loss"].backward()
        optim.step()
    rgb1, mask1 = ref_losses()
    assert rgb1 < 0.5 * rgb0 and mask1 < 0.6 * mask0, (rgb0, rgb1, mask0, mask1)


def test_refine_stage_starts_from_a_coarse_checkpoint(tmp_path):
    torch.manual_seed(0)
    # the coarse field's blob (softplus density ~10 at the centre) crosses density 5
    coarse_cli = NERF + FAKES + ["system.geometry.isosurface_threshold=5.0"]
    coarse_cfg = load_config(f"{REPO}/configs/magic123-coarse-sd.yaml", cli_args=SIZE + coarse_cli)
    coarse = Magic123(coarse_cfg.system)
    # the trial as launch.py leaves it: configs/parsed.yaml beside ckpts/last.ckpt
    (tmp_path / "configs").mkdir()
    (tmp_path / "ckpts").mkdir()
    dump_config(str(tmp_path / "configs" / "parsed.yaml"), coarse_cfg)
    ckpt = tmp_path / "ckpts" / "last.ckpt"
    torch.save({"state_dict": coarse.state_dict(), "epoch": 0, "global_step": 0}, ckpt)

    refine, batch = system_and_batch(
        "magic123-refine-sd",
        FAKES
        + [f"system.geometry_convert_from={ckpt}", "system.geometry.isosurface_resolution=32"],
    )
    geometry = refine.geometry
    assert refine.cfg.refinement and type(geometry).__name__ == "TetrahedraSDFGrid"
    # the texture field is inherited (geometry_convert_inherit_texture: true)
    for a, b in zip(geometry.encoding.parameters(), coarse.geometry.encoding.parameters()):
        assert torch.equal(a, b)
    # the tet grid's SDF: inside at the centre of the blob, outside at the box's corner
    vertices = geometry.grid_points_in(geometry.isosurface_bbox)  # world coordinates
    centre = vertices.norm(dim=-1).argmin()
    corner = vertices.norm(dim=-1).argmax()
    assert float(geometry.sdf[centre]) < 0 < float(geometry.sdf[corner])

    # one refine step: the mesh's normal consistency (1000) instead of the volume regularisers
    renders = record_renders(refine)
    loss = refine.training_step(batch, 0)["loss"]
    ref_out, novel_out = renders
    terms = refine.regularizer_terms(novel_out, "novel")
    assert set(terms) == {"loss_normal_consistency"}
    with torch.no_grad():
        ref = refine.reference_terms(ref_out, batch)
    expected = (
        1000 * ref["loss_rgb"]
        + 100 * ref["loss_mask"]
        + 0.025 * LOSS_2D
        + LOSS_3D
        + 1000 * terms["loss_normal_consistency"]
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
