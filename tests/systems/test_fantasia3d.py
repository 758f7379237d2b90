"""fantasia3d-system: what each stage hands the guidance. The geometry stage gives the normal map
in [-1, 1] and the silhouette as a 4-channel latent for the first ``latent_steps`` steps and the
normal map as an RGB image afterwards; the appearance stage gives the shaded colour (and a
ControlNet the view-space normals); the SD guidance takes both geometry-stage inputs and its
loss reaches the SDF."""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import threestudio
from tests.tiny_pipelines import build_tiny_sd
from tests.tiny_text import make_tiny_clip_text
from threestudio.data.uncond import make_camera_batch
from threestudio.systems.fantasia3d import viewspace_normal
from threestudio.utils.base import BaseObject

RECEIVED = []


@threestudio.register("test-fantasia3d-recording-guidance")
class RecordingGuidance(BaseObject):
    """Records its input; its loss pulls every input channel towards 0."""

    @dataclass
    class Config(BaseObject.Config):
        pass

    cfg: Config

    def __call__(self, rgb, prompt_utils, rgb_as_latents=False, **kwargs):
        RECEIVED.append({"rgb": rgb.detach().clone(), "rgb_as_latents": rgb_as_latents})
        return {"loss_sds": (rgb**2).mean()}


@threestudio.register("test-fantasia3d-prompt-processor")
class NoPrompts(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        prompt: str = ""

    cfg: Config

    def __call__(self):
        return None


TINY_FIELD = {
    "otype": "HashGrid",
    "n_levels": 4,
    "n_features_per_level": 2,
    "log2_hashmap_size": 12,
    "base_resolution": 4,
    "per_level_scale": 1.5,
}


def geometry_stage_cfg(**overrides):
    cfg = {
        "latent_steps": 1,
        "geometry_type": "implicit-sdf",
        # the published geometry stage, small; a sphere of radius 0.5 without fitting
        "geometry": {
            "radius": 1.0,
            "n_feature_dims": 0,
            "isosurface_resolution": 24,
            "isosurface_deformable_grid": True,
            "isosurface_coarse_to_fine": False,
            "pos_encoding_config": TINY_FIELD,
            "sdf_bias": "sphere",
            "sdf_bias_params": 0.5,
        },
        "material_type": "no-material",
        "material": {"n_output_dims": 0},
        "background_type": "solid-color-background",
        "renderer_type": "nvdiff-rasterizer",
        "guidance_type": "test-fantasia3d-recording-guidance",
        "prompt_processor_type": "test-fantasia3d-prompt-processor",
        "loss": {"lambda_sds": 1.0, "lambda_normal_consistency": 0.0},
        "optimizer": {"name": "AdamW", "args": {"lr": 0.001}},
    }
    cfg.update(overrides)
    return cfg


def camera_batch(size=24, elevation=20.0, azimuth=30.0, distance=3.0):
    batch = make_camera_batch(
        torch.tensor([elevation]),
        torch.tensor([azimuth]),
        torch.tensor([distance]),
        torch.tensor([45.0]),
        size,
        size,
        light_positions=torch.tensor([[0.0, 0.0, 10.0]]),
    )
    return batch


def start(system):
    system.on_fit_start()
    system.on_train_start()
    return system


def test_geometry_stage_feeds_a_normal_silhouette_latent_then_a_normal_image():
    RECEIVED.clear()
    system = start(threestudio.find("fantasia3d-system")(geometry_stage_cfg()))
    batch = camera_batch()
    out = system(batch)
    assert "comp_rgb" not in out  # the geometry stage renders no colour

    system.training_step(batch, 0)  # step 0 < latent_steps
    latent = RECEIVED[-1]
    assert latent["rgb_as_latents"] is True and latent["rgb"].shape == (1, 24, 24, 4)
    assert torch.allclose(latent["rgb"][..., :3], out["comp_normal"] * 2 - 1, atol=1e-6)
    assert torch.allclose(latent["rgb"][..., 3:], out["opacity"], atol=1e-6)
    # the sphere's silhouette: covered at the centre, empty at the corners (normals -1 there)
    sil = latent["rgb"][0, ..., 3]
    assert sil[12, 12] == 1.0 and sil[0, 0] == 0.0
    assert torch.allclose(latent["rgb"][0, 0, 0, :3], -torch.ones(3))
    # at the image centre the sphere's normal points at the camera
    towards_camera = F.normalize(batch["camera_positions"][0], dim=-1)
    centre = F.normalize(latent["rgb"][0, 11:13, 11:13, :3].mean((0, 1)), dim=-1)
    assert float(centre @ towards_camera) > 0.99

    system.set_resume_status(0, 1)  # step 1 >= latent_steps
    system.training_step(batch, 1)
    image = RECEIVED[-1]
    assert image["rgb_as_latents"] is False and image["rgb"].shape == (1, 24, 24, 3)
    assert torch.allclose(image["rgb"], out["comp_normal"], atol=1e-6)
    assert image["rgb"].min() >= 0 and image["rgb"].max() <= 1


def test_normal_consistency_is_added_when_weighted():
    RECEIVED.clear()
    cfg = geometry_stage_cfg(loss={"lambda_sds": 0.0, "lambda_normal_consistency": 1.0})
    system = start(threestudio.find("fantasia3d-system")(cfg))
    batch = camera_batch()
    loss = system.training_step(batch, 0)["loss"]
    expected = system(batch)["mesh"].normal_consistency()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5) and float(loss) > 0


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("f3d_sd")
    path = build_tiny_sd(root / "sd")
    make_tiny_clip_text(root / "sd")
    return path


def test_sd_guidance_takes_both_inputs_and_its_loss_reaches_the_sdf(tiny_sd):
    cfg = geometry_stage_cfg(
        prompt_processor_type="stable-diffusion-prompt-processor",
        prompt_processor={
            "pretrained_model_name_or_path": tiny_sd,
            "prompt": "a hamburger",
            "spawn": False,
        },
        guidance_type="stable-diffusion-guidance",
        guidance={
            "pretrained_model_name_or_path": tiny_sd,
            "guidance_scale": 100.0,
            "max_step_percent": 0.5,
            "weighting_strategy": "fantasia3d",
        },
    )
    system = start(threestudio.find("fantasia3d-system")(cfg))
    batch = camera_batch()
    for step in (0, 1):  # the latent, then the image
        system.set_resume_status(0, step)
        system.zero_grad()
        loss = system.training_step(batch, step)["loss"]
        loss.backward()
        grads = [p.grad for p in system.geometry.sdf_network.parameters()]
        assert torch.isfinite(loss) and float(loss) > 0
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), step


def test_texture_stage_feeds_the_shaded_colour():
    RECEIVED.clear()
    cfg = {
        "texture": True,
        "geometry_type": "tetrahedra-sdf-grid",
        "geometry": {
            "radius": 1.0,
            "isosurface_resolution": 16,
            "isosurface_deformable_grid": True,
            "pos_encoding_config": TINY_FIELD,
            "n_feature_dims": 8,
            "fix_geometry": True,
            "shape_init": "sphere",
            "shape_init_params": 0.5,
        },
        "material_type": "pbr-material",
        "material": {"environment_resolution": 16},
        "background_type": "solid-color-background",
        "renderer_type": "nvdiff-rasterizer",
        "guidance_type": "test-fantasia3d-recording-guidance",
        "prompt_processor_type": "test-fantasia3d-prompt-processor",
        "loss": {"lambda_sds": 1.0, "lambda_normal_consistency": 0.0},
        "optimizer": {"name": "AdamW", "args": {"lr": 0.01}},
    }
    system = start(threestudio.find("fantasia3d-system")(cfg))
    batch = camera_batch(size=16)
    loss = system.training_step(batch, 0)["loss"]
    received = RECEIVED[-1]
    out = system(batch)
    assert received["rgb_as_latents"] is False and received["rgb"].shape == (1, 16, 16, 3)
    assert torch.allclose(received["rgb"], out["comp_rgb"], atol=1e-6)
    loss.backward()
    # the frozen surface has no parameters; the texture field learns
    assert "geometry.sdf" not in dict(system.named_parameters())
    grads = [p.grad for p in system.geometry.encoding.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_viewspace_normals_of_the_controlnet_condition():
    batch = camera_batch(size=4, elevation=0.0, azimuth=0.0)
    c2w = batch["c2w"]
    towards_camera = F.normalize(batch["camera_positions"], dim=-1)  # [1, 3]
    world_up = torch.tensor([[0.0, 0.0, 1.0]])
    normals = torch.stack([towards_camera, world_up], dim=1).view(1, 1, 2, 3)
    encoded = (normals + 1) / 2
    opacity = torch.tensor([1.0, 1.0]).view(1, 1, 2, 1)
    view = viewspace_normal(encoded, opacity, c2w) * 2 - 1
    # facing the camera: +z of the camera (OpenGL); the world's up: the camera's up (+y)
    assert torch.allclose(view[0, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert torch.allclose(view[0, 0, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    # nothing rendered: the camera-facing normal
    empty = viewspace_normal(torch.zeros(1, 1, 1, 3), torch.zeros(1, 1, 1, 1), c2w)
    assert torch.allclose(empty, torch.tensor([0.5, 0.5, 1.0]))
    assert math.isclose(float(view.norm(dim=-1).max()), 1.0, rel_tol=1e-5)


def test_shaded_geometry_render_is_the_lit_sphere_in_its_learnt_colour():
    RECEIVED.clear()
    cfg = geometry_stage_cfg(latent_steps=0, geometry_render="shaded")
    system = start(threestudio.find("fantasia3d-system")(cfg))
    with torch.no_grad():
        system.shaded_color.copy_(torch.tensor([2.0, -1.0, 0.0]))  # a red-ish colour
    color = torch.sigmoid(system.shaded_color.detach())
    batch = camera_batch(elevation=90.0 - 1e-3, azimuth=0.0)  # from above; the light is above
    system.training_step(batch, 0)
    image = RECEIVED[-1]
    assert image["rgb_as_latents"] is False and image["rgb"].shape == (1, 24, 24, 3)
    rgb = image["rgb"][0]
    # white around the sphere; at its centre the normal faces the light: ambient + diffuse = 1
    assert torch.allclose(rgb[0, 0], torch.ones(3))
    assert torch.allclose(rgb[11:13, 11:13].mean((0, 1)), color, atol=0.02)
    # towards the rim the normal turns from the light: the same colour, darker (never below the
    # ambient share)
    out = system(batch)
    normal = F.normalize(out["comp_normal"][0] * 2 - 1, dim=-1)
    inside = out["opacity"][0, ..., 0] > 0.999
    expected = color * (0.3 + 0.7 * normal[..., 2:].clamp(min=0))
    assert torch.allclose(rgb[inside], expected[inside], atol=1e-5)
    assert float(rgb[inside][:, 0].min()) < 0.8 * float(color[0])
    # its loss reaches both the surface and the colour
    system.zero_grad()
    system.training_step(batch, 0)["loss"].backward()
    assert float(system.shaded_color.grad.abs().sum()) > 0
    assert any(
        p.grad is not None and float(p.grad.abs().sum()) > 0
        for p in system.geometry.sdf_network.parameters()
    )


def test_unknown_geometry_render_is_one_line():
    with pytest.raises(threestudio.utils.errors.ConfigError, match="system.geometry_render"):
        threestudio.find("fantasia3d-system")(geometry_stage_cfg(geometry_render="normals"))
