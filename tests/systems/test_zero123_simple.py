"""zero123-simple-system: each step scores only the random camera (no reference-view loss),
its loss is the guidance's plus the 2D normal smoothness, the training panels are saved every
50 steps, and the unified guidance is built when training starts with SDS but at once (its
LoRA in the optimiser's guidance group) with VSD."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

import threestudio
from threestudio.data.image import SingleImageDataModule
from threestudio.systems.zero123_simple import TRAIN_IMAGE_EVERY
from threestudio.utils.base import BaseObject
from threestudio.utils.config import load_config
from threestudio.utils.errors import ConfigError
from threestudio.utils.loss import normal_smoothness_2d
from threestudio.utils.paths import REPO_ROOT as REPO

CONFIG = f"{REPO}/configs/experimental/unified-guidance/zero123-simple.yaml"
SIZE = [
    "data.image_path=./load/images/sphere_rgba.png",
    "data.height=16",
    "data.width=16",
    "data.random_camera.height=8",
    "data.random_camera.width=8",
    "system.renderer.num_samples_per_ray=32",
    "system.renderer.grid_prune=false",  # no occupancy grid (it is updated by the trainer)
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
]


@threestudio.register("test-zero123-simple-capture-guidance")
class CaptureGuidance(BaseObject):
    """Records its calls; loss_sd is the render's mean, and it returns a 4x4 x0 estimate."""

    @dataclass
    class Config(threestudio.find("zero123-unified-guidance").Config):  # published keys
        pass

    cfg: Config

    def configure(self) -> None:
        self.calls = []

    def __call__(self, rgb, prompt_utils=None, **kwargs):
        self.calls.append({"rgb": rgb, **kwargs})
        n = rgb.shape[0]
        return {
            "loss_sd": rgb.mean(),
            "timestep": torch.tensor(321.0),
            "rgb_1step_orig": torch.full((n, 4, 4, 3), 0.75),
        }


def system_and_batch(cli):
    cfg = load_config(CONFIG, cli_args=SIZE + cli)
    system = threestudio.find(cfg.system_type)(cfg.system).train()
    system._build_members = True  # as once fitting starts: the guidance is built on first use
    dm = SingleImageDataModule(cfg.data)
    dm.setup("fit")
    return system, next(iter(dm.train_dataloader()))


def test_normal_smoothness_2d_of_a_ramp():
    # x grows by 0.1 per column, y by 0.2 per row: one of three channels changes along each
    # direction, (0.2^2 + 0.1^2) / 3 in all
    rows, cols = torch.meshgrid(torch.arange(5.0), torch.arange(7.0), indexing="ij")
    normal = torch.stack([0.1 * cols, 0.2 * rows, torch.ones_like(rows)], dim=-1)[None]
    assert math.isclose(float(normal_smoothness_2d(normal)), 0.05 / 3, rel_tol=1e-5)
    assert float(normal_smoothness_2d(torch.ones(1, 4, 4, 3))) == 0.0


def test_a_step_scores_the_random_camera_only(tmp_path):
    system, batch = system_and_batch(["system.guidance_type=test-zero123-simple-capture-guidance"])
    system.set_save_dir(str(tmp_path))
    renders = []
    forward = system.forward

    def recording_forward(b):
        out = forward(b)
        renders.append((b, out))
        return out

    system.forward = recording_forward
    loss = system.training_step(batch, 0)["loss"]

    # one render, of the novel camera, handed to the guidance with that camera
    assert len(renders) == 1 and len(system.guidance.calls) == 1
    rendered, out = renders[0]
    novel = batch["random_camera"]
    assert rendered["rays_o"] is novel["rays_o"]
    call = system.guidance.calls[0]
    for key in ("elevation", "azimuth", "camera_distances", "c2w", "mvp_mtx"):
        assert call[key] is novel[key], key
    assert call["rgb_as_latents"] is False and call["rgb"] is out["comp_rgb"]

    # the published weights: lambda_sd 1, lambda_normal_smoothness_2d 1000, the rest 0
    expected = out["comp_rgb"].mean() + 1000.0 * normal_smoothness_2d(out["comp_normal"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert any(p.grad is not None for p in system.geometry.parameters())

    # step 0: the render beside the (resized) 4x4 x0 estimate, named by the timestep
    image = np.asarray(Image.open(tmp_path / "it0-train-t321.png").convert("RGB")) / 255.0
    assert image.shape[0] == 8 and image.shape[1] >= 2 * 8
    np.testing.assert_allclose(image[:, -8:], 0.75, atol=1 / 255 + 1e-6)


def test_training_panels_every_50_steps(tmp_path, monkeypatch):
    system, batch = system_and_batch(["system.guidance_type=test-zero123-simple-capture-guidance"])
    system.set_save_dir(str(tmp_path))
    saved = []
    monkeypatch.setattr(system, "save_train_images", lambda *a: saved.append(1))
    for step in (1, TRAIN_IMAGE_EVERY - 1, TRAIN_IMAGE_EVERY):
        monkeypatch.setattr(type(system), "true_global_step", property(lambda self, s=step: s))
        system.training_step(batch, 0)
    assert TRAIN_IMAGE_EVERY == 50 and len(saved) == 1


def test_normal_smoothness_needs_comp_normal():
    system, batch = system_and_batch(
        [
            "system.guidance_type=test-zero123-simple-capture-guidance",
            "system.renderer.return_comp_normal=false",
        ]
    )
    with pytest.raises(ConfigError, match="lambda_normal_smoothness_2d"):
        system.training_step(batch, 0)


@pytest.fixture(scope="module")
def tiny_zero123(tmp_path_factory):
    from tests.tiny_pipelines import build_tiny_zero123

    return build_tiny_zero123(tmp_path_factory.mktemp("tiny_zero123_system"))


def test_sds_guidance_waits_for_training_and_vsd_trains_in_the_guidance_group(tiny_zero123):
    model = f"system.guidance.pretrained_model_name_or_path={tiny_zero123}"
    cfg = load_config(CONFIG, cli_args=SIZE + [model])
    sds = threestudio.find(cfg.system_type)(cfg.system)
    assert "guidance" not in sds._modules  # frozen: built when training starts
    groups = {g["name"]: g for g in sds.configure_optimizers()["optimizer"].param_groups}
    assert groups["guidance"]["params"] == []

    cfg = load_config(CONFIG, cli_args=SIZE + [model, "system.guidance.guidance_type=vsd"])
    vsd = threestudio.find(cfg.system_type)(cfg.system)
    assert vsd.guidance.shares_unet  # the published vsd_phi_model_name_or_path: null
    groups = {g["name"]: g for g in vsd.configure_optimizers()["optimizer"].param_groups}
    lora = {id(p) for p in vsd.guidance.lora_layers.parameters()}
    assert lora and {id(p) for p in groups["guidance"]["params"]} == lora
    assert groups["guidance"]["lr"] == 0.0001
    # vsd_use_camera_condition: false (the name is phi's camera embedding module, as in the
    # established state dicts; the method of that name is the relative camera)
    assert "camera_embedding" not in vsd.guidance._modules
