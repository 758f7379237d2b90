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


def framed_system(share, isosurface, mode="fill", render=None):
    """A system in its test stage over a turntable datamodule with data.eval_fit_object=share;
    ``isosurface`` stands in for the trained geometry's surface (None: a geometry without one)."""
    from types import SimpleNamespace

    from threestudio.data.uncond import RandomCameraDataModule

    dm = RandomCameraDataModule(
        {"eval_height": 48, "eval_width": 48, "eval_fovy_deg": 40.0, "eval_elevation_deg": 30.0,
         "eval_camera_distance": 1.5, "n_test_views": 4, "eval_fit_object": share,
         "eval_fit_mode": mode}
    )  # fmt: skip
    dm.setup("test")
    system = LeavesItToTheBase(system_cfg())
    if isosurface is None:
        system.geometry = nn.Module()  # nothing to read a surface from
    else:
        system.geometry.isosurface = isosurface
    if render is not None:
        system.forward = render  # the system's render of a test batch
    system._trainer = SimpleNamespace(datamodule=dm, current_epoch=0, global_step=0)
    system.on_test_start()
    batches = []
    for batch in dm.test_dataloader():
        system.on_test_batch_start(batch, 0)
        batches.append(batch)
    return batches


def test_test_turntable_is_framed_on_the_object():
    import trimesh

    from threestudio.models.mesh import Mesh

    center, radius = torch.tensor([0.25, -0.1, 0.3]), 0.6
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    mesh = Mesh(
        v_pos=torch.tensor(sphere.vertices, dtype=torch.float32) + center,
        t_pos_idx=torch.tensor(sphere.faces, dtype=torch.long),
    )
    for batch in framed_system(0.9, lambda: mesh):
        # every view turns about the object's centre and sees it at 0.9 of the frame height
        o = batch["rays_o"][0] - center
        d = torch.nn.functional.normalize(batch["rays_d"][0], dim=-1)
        b, c = (o * d).sum(-1), (o * o).sum(-1) - radius**2
        hits = (b * b - c > 0) & (b < 0)
        rows = hits.any(dim=1).nonzero().float()
        assert abs(len(rows) / 48 - 0.9) <= 2 / 48
        assert abs(float(rows.mean()) - 23.5) < 1
        assert float(batch["camera_distances"][0]) > 1.5  # moved back from the fixed 1.5


def sphere_mesh(center, radius):
    import trimesh

    from threestudio.models.mesh import Mesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return Mesh(
        v_pos=torch.tensor(sphere.vertices, dtype=torch.float32) + center,
        t_pos_idx=torch.tensor(sphere.faces, dtype=torch.long),
    )


def sphere_rows(batch, center, radius):
    """The image rows whose rays hit the sphere (analytic ray-sphere test)."""
    o = batch["rays_o"][0] - center
    d = torch.nn.functional.normalize(batch["rays_d"][0], dim=-1)
    b, c = (o * d).sum(-1), (o * o).sum(-1) - radius**2
    hits = (b * b - c > 0) & (b < 0)
    return hits


def sphere_render(center, radius):
    """An analytic renderer: the opacity of a solid sphere (1 where a ray hits it)."""
    return lambda batch: {"opacity": sphere_rows(batch, center, radius).float()[None, ..., None]}


@pytest.mark.parametrize("render", [False, True])
def test_contain_keeps_the_fixed_camera_for_an_object_inside_the_frame(caplog, render):
    caplog.set_level("INFO")
    center, radius = torch.tensor([0.1, 0.0, -0.05]), 0.3  # well inside a 40-degree view at 1.5
    draw = sphere_render(center, radius) if render else lambda batch: {}  # no opacity
    for batch in framed_system(0.9, lambda: sphere_mesh(center, radius), "contain", draw):
        assert float(batch["camera_positions"][0].norm()) == pytest.approx(1.5)
    assert "keep the fixed camera" in caplog.text


def test_contain_looks_at_the_render_not_at_faint_isosurface_parts(caplog):
    # the isosurface reaches past the frame (faint floaters), the rendered object does not
    caplog.set_level("INFO")
    center = torch.tensor([0.1, 0.0, -0.05])
    draw = sphere_render(center, 0.3)
    for batch in framed_system(0.9, lambda: sphere_mesh(center, 0.8), "contain", draw):
        assert float(batch["camera_positions"][0].norm()) == pytest.approx(1.5)
    assert "keep the fixed camera" in caplog.text


@pytest.mark.parametrize("render", [False, True])
def test_contain_frames_an_object_that_would_leave_the_frame(render):
    center, radius = torch.tensor([0.2, -0.1, -0.4]), 0.7  # past the frame edge from 1.5
    draw = sphere_render(center, radius) if render else lambda batch: {}  # no opacity
    for batch in framed_system(0.9, lambda: sphere_mesh(center, radius), "contain", draw):
        hits = sphere_rows(batch, center, radius)
        rows = hits.any(dim=1).nonzero().float()
        assert abs(len(rows) / 48 - 0.9) <= 2 / 48  # held in 0.9 of the frame, centred
        assert abs(float(rows.mean()) - 23.5) < 1
        border = torch.cat([hits[0], hits[-1], hits[:, 0], hits[:, -1]])
        assert not bool(border.any())


def test_contain_frames_the_rendered_object_not_its_faint_parts(caplog):
    # the isosurface also holds a faint skirt below the object that the render does not show:
    # the camera frames the rendered sphere alone (as near as holds it, centred on it). (A
    # part hidden behind the object in every view would stay: no view tells it apart.)
    caplog.set_level("INFO")
    center, radius = torch.tensor([0.2, -0.1, -0.4]), 0.7
    sphere, skirt = sphere_mesh(center, radius), sphere_mesh(torch.tensor([0.2, -0.1, -2.0]), 0.2)
    both = type(sphere)(
        v_pos=torch.cat([sphere.v_pos, skirt.v_pos]),
        t_pos_idx=torch.cat([sphere.t_pos_idx, skirt.t_pos_idx + len(sphere.v_pos)]),
    )
    draw = sphere_render(center, radius)
    for batch in framed_system(0.9, lambda: both, "contain", draw):
        hits = sphere_rows(batch, center, radius)
        rows = hits.any(dim=1).nonzero().float()
        assert abs(len(rows) / 48 - 0.9) <= 2 / 48
        assert abs(float(rows.mean()) - 23.5) < 1
    assert "centre (0.20, -0.10, -0.40)" in caplog.text


def test_test_turntable_without_a_surface_keeps_the_fixed_camera(caplog):
    for batch in framed_system(0.9, None):
        assert float(batch["camera_positions"][0].norm()) == pytest.approx(1.5)
    assert "has no isosurface to frame" in caplog.text
