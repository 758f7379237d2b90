"""Zero-1-to-3 system: the reference-view losses fit the reference image, the guidance gets the
novel camera relative to the reference one in Zero-1-to-3's axes, the depth losses are
scale-invariant."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import threestudio
from threestudio.data.image import SingleImageDataModule
from threestudio.models.guidance.stable_zero123_guidance import StableZero123Guidance
from threestudio.models.guidance.zero123_guidance import Zero123Guidance
from threestudio.systems.zero123 import depth_fit_loss, depth_rel_loss
from threestudio.utils.base import BaseObject
from threestudio.utils.config import load_config
from threestudio.utils.paths import REPO_ROOT as REPO

SIZE = [
    "data.height=16",
    "data.width=16",
    "data.random_camera.height=8",
    "data.random_camera.width=8",
    "data.random_camera.batch_size=1",
    "system.renderer.num_samples_per_ray=32",
    "system.renderer.grid_prune=false",  # no occupancy grid (it is updated by the trainer)
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
]


@threestudio.register("test-zero123-capture-guidance")
class CaptureGuidance(BaseObject):
    """Records what the system hands to the guidance and computes Zero-1-to-3's camera
    embedding from it; its SDS loss is 0 (with a gradient path)."""

    @dataclass
    class Config(Zero123Guidance.Config):  # the published keys, nothing loaded
        pass

    cfg: Config

    def configure(self) -> None:
        self.calls = []

    def __call__(self, rgb, prompt_utils=None, **kwargs):
        self.calls.append(kwargs)
        out = {"loss_sds": rgb.sum() * 0.0}
        if kwargs.get("guidance_eval"):
            # the guidance's inspection panels at 4x4 (resized to the render's size)
            n = rgb.shape[0]
            out["eval"] = {"bs": n, "noise_levels": [0.5] * n}
            for i, key in enumerate(("imgs_noisy", "imgs_1step", "imgs_1orig", "imgs_final")):
                out["eval"][key] = torch.full((n, 4, 4, 3), 0.2 * (i + 1))
        return out


def system_and_data(cli):
    cfg = load_config(f"{REPO}/configs/zero123.yaml", cli_args=SIZE + cli)
    system = threestudio.find(cfg.system_type)(cfg.system).train()
    system._build_members = True  # as once fitting starts: the guidance is built on first use
    dm = SingleImageDataModule(cfg.data)
    dm.setup("fit")
    return system, dm


def test_reference_losses_fall_when_fitting_the_reference_alone():
    torch.manual_seed(0)
    # the reference view only: no novel view, no guidance
    system, dm = system_and_data(["system.freq.ref_only_steps=1000", "system.loss.lambda_sds=0"])
    batch = next(iter(dm.train_dataloader()))

    def ref_losses():
        with torch.no_grad():
            out = system(dict(batch, ambient_ratio=1.0, shading="diffuse"))
            terms = system.reference_terms(out, batch)
        return float(terms["loss_rgb"]), float(terms["loss_mask"])

    rgb0, mask0 = ref_losses()
    optim = torch.optim.Adam(system.parameters(), lr=0.01)
    for _ in range(30):
        optim.zero_grad()
        system.training_step(batch, 0)["loss"].backward()
        optim.step()
    rgb1, mask1 = ref_losses()
    assert rgb1 < 0.5 * rgb0 and mask1 < 0.6 * mask0, (rgb0, rgb1, mask0, mask1)


def test_the_guidance_gets_the_novel_camera_in_zero123_axes():
    system, dm = system_and_data(["system.guidance_type=test-zero123-capture-guidance"])
    batch = next(iter(dm.train_dataloader()))
    # a hand-placed novel view: elevation 30, azimuth 90, the reference distance
    novel = dict(batch["random_camera"])
    novel.update(
        elevation=torch.tensor([30.0]),
        azimuth=torch.tensor([90.0]),
        camera_distances=torch.tensor([3.8]),
    )
    system.training_step(dict(batch, random_camera=novel), 0)
    guidance = system.guidance
    assert len(guidance.calls) == 1  # only the novel view is scored
    got = guidance.calls[0]
    assert float(got["elevation"]) == 30.0 and float(got["azimuth"]) == 90.0
    # the reference camera of the published config: elevation 0, azimuth 0, distance 3.8
    cond = (guidance.cfg.cond_elevation_deg, guidance.cfg.cond_azimuth_deg)
    assert cond == (0.0, 0.0) and guidance.cfg.cond_camera_distance == 3.8
    args = (got["elevation"], got["azimuth"], got["camera_distances"])
    # polar from the top: 90 - 30 = 60 against the reference's 90, Δpolar = -30 degrees;
    # Δazimuth = 90 degrees (sin 1, cos 0); Δdistance 0; Stable Zero123 gives the reference's
    # polar (90 degrees) instead of Δdistance
    expected = torch.tensor([[-math.pi / 6, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(Zero123Guidance.camera_embedding(guidance, *args), expected)
    expected[0, 3] = math.pi / 2
    torch.testing.assert_close(StableZero123Guidance.camera_embedding(guidance, *args), expected)


def test_the_novel_view_has_white_or_random_backgrounds_and_ambient_in_range():
    system, dm = system_and_data(["data.random_camera.batch_size=64"])
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    novel = system.novel_view_batch(batch)
    white = (novel["bg_color"] == 1).all(-1)
    assert 16 < int(white.sum()) < 48  # about half
    assert 0.1 <= novel["ambient_ratio"] <= 1.0


@pytest.mark.parametrize("loss", [depth_fit_loss, depth_rel_loss])
def test_depth_losses_are_scale_and_shift_invariant(loss):
    ref = torch.rand(200, generator=torch.Generator().manual_seed(0)) + 1.0
    assert float(loss(2.5 * ref + 0.7, ref)) < 1e-6
    # a depth that is no affine map of the reference is penalised
    other = torch.rand(200, generator=torch.Generator().manual_seed(1))
    assert float(loss(other, ref)) > 1e-2


def test_relative_depth_loss_of_a_reversed_depth_is_two():
    # correlation -1: a depth that grows where the reference shrinks
    ref = torch.linspace(1.0, 2.0, 50)
    assert abs(float(depth_rel_loss(-0.3 * ref + 4.0, ref)) - 2.0) < 1e-5


def test_guidance_eval_saves_the_renders_beside_the_denoised_panels(tmp_path):
    system, dm = system_and_data(
        ["system.guidance_type=test-zero123-capture-guidance", "system.freq.guidance_eval=1"]
    )
    system.set_save_dir(str(tmp_path))
    batch = next(iter(dm.train_dataloader()))
    system.training_step(batch, 0)
    assert system.guidance.calls[0]["guidance_eval"] is True
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "it0-train.png").convert("RGB")) / 255.0
    # five 8x8 panels side by side (render + four); the last is the constant 0.8 panel
    assert image.shape[0] == 8 and image.shape[1] >= 5 * 8
    np.testing.assert_allclose(image[:, -8:], 0.8, atol=1 / 255 + 1e-6)


def test_reference_terms_vanish_for_a_render_that_matches_the_reference():
    system, dm = system_and_data(
        [
            "system.loss.lambda_depth=1.0",
            "system.loss.lambda_depth_rel=1.0",
            "system.loss.lambda_normal=1.0",
            "data.requires_depth=true",
            "data.requires_normal=true",
        ]
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["ref_depth"] is not None and batch["ref_normal"] is not None
    mask = batch["mask"].float()
    bg = torch.full_like(batch["rgb"], 0.3)
    inside = batch["mask"][..., 0] > 0.5
    # the established convention: a render normal n matches the reference map m when
    # 2 n - 1 = 1 - 2 m, i.e. n = 1 - m
    out = {
        "comp_rgb": batch["rgb"] * mask + bg * (1 - mask),
        "comp_rgb_bg": bg,
        "opacity": mask,
        "depth": 3.0 * batch["ref_depth"][..., None] + 1.5,  # another scale and shift
        "comp_normal": 1 - batch["ref_normal"],
    }
    terms = system.reference_terms(out, batch)
    assert set(terms) == {
        "loss_rgb",
        "loss_mask",
        "loss_depth",
        "loss_depth_rel",
        "loss_normal",
    }
    for name, value in terms.items():
        assert float(value) < 1e-5, name
    # the reference map itself (not flipped) is far from the render's convention
    assert inside.any()
    out["comp_normal"] = batch["ref_normal"]
    assert float(system.reference_terms(out, batch)["loss_normal"]) > 0.1


@pytest.mark.parametrize(
    "cli, scored",
    [
        # accumulate (both views every step) after two reference-only steps
        (["system.freq.ref_only_steps=2"], [False, False, True, True]),
        # alternate: the reference view on even steps, the novel view on odd ones
        (["system.freq.ref_or_zero123=alternate", "system.freq.n_ref=2"], [False, True] * 2),
    ],
)
def test_which_steps_score_a_novel_view(cli, scored):
    system, dm = system_and_data(["system.guidance_type=test-zero123-capture-guidance"] + cli)
    batch = next(iter(dm.train_dataloader()))
    got = []
    for step in range(4):
        system.set_resume_status(0, step)
        before = len(system.guidance.calls)
        system.training_step(batch, step)
        got.append(len(system.guidance.calls) > before)
    assert got == scored
