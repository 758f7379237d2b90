"""The synthetic world of the bundled tiny model: simple coloured objects rendered by the
project's own rasteriser and shading, from cameras drawn like the random-camera datamodule's.

Each image is one object (``SHAPES``) in one colour (``COLORS``) on a solid background, shaded by
``diffuse-with-point-light-material`` under a point light drawn as in training, and rendered by
``nvdiff-rasterizer``. Its caption is the object's prompt ("a red cube") with the view-dependent
wording the prompt processor adds for that camera ("a red cube, front view"), so the model
trained on it speaks the same language as a text-to-3D run.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

import threestudio
from threestudio.data.uncond import RandomCameraDataModuleConfig, RandomCameraIterableDataset
from threestudio.models.mesh import Mesh
from threestudio.models.prompt_processors.base import direction_indices, make_directions
from threestudio.utils.config import parse_structured
from threestudio.utils.typing import Dict, Float, Integer, List, Optional, Tensor, Tuple

SHAPES: Tuple[str, ...] = ("sphere", "cube", "cone", "cylinder", "torus")
# albedo of each colour word (linear, as the material multiplies it by the light)
COLORS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.08),
    "green": (0.12, 0.68, 0.18),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (0.98, 0.48, 0.05),
    "purple": (0.55, 0.18, 0.78),
}
# the view words of the prompt processor's default templates ("{}, front view", ...)
DIRECTIONS: Tuple[str, ...] = ("side", "front", "back", "overhead")

# cameras of the bundled world; the quickstart config draws its training cameras the same way
CAMERA_CONFIG = {
    "elevation_range": [-10, 80],
    "azimuth_range": [-180, 180],
    "camera_distance_range": [1.5, 2.0],
    "fovy_range": [40, 60],
    "camera_perturb": 0.0,
    "center_perturb": 0.0,
    "up_perturb": 0.0,
    "light_sample_strategy": "dreamfusion",
    "batch_uniform_azimuth": True,
}
BACKGROUND_COLOR = (1.0, 1.0, 1.0)
# the material's light: brighter ambient than its default, so unlit sides keep their colour; the
# quickstart config's material uses the same values
SHADING = {"ambient_light_color": [0.3, 0.3, 0.3], "diffuse_light_color": [0.7, 0.7, 0.7]}


def prompt_of(color: str, shape: str) -> str:
    return f"a {color} {shape}"


def all_prompts() -> List[str]:
    """The 30 prompts of the bundled world, colour-major."""
    return [prompt_of(c, s) for c in COLORS for s in SHAPES]


def spread_prompts(n: int) -> List[str]:
    """``n`` different prompts of the 30 (the benchmarks' fixed sets): prompt i has colour
    i mod 6 and shape i mod 5, so colours and shapes take turns and none repeats below 30."""
    colors = list(COLORS)
    return [prompt_of(colors[i % len(COLORS)], SHAPES[i % len(SHAPES)]) for i in range(min(n, 30))]


def known_words() -> List[str]:
    """Every word a caption of the bundled world can contain."""
    words = ["a", "view"] + list(COLORS) + list(SHAPES) + list(DIRECTIONS)
    return sorted(set(words))


def shape_mesh(name: str) -> Mesh:
    """A closed triangle mesh of ``name``, z up, inside the sphere of radius 0.55; vertices are
    split at sharp edges so the vertex normals shade flat faces flat."""
    import trimesh

    if name == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    elif name == "cube":
        mesh = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    elif name == "cone":
        mesh = trimesh.creation.cone(radius=0.42, height=0.8, sections=48)
        mesh.apply_translation((0.0, 0.0, -0.4))
    elif name == "cylinder":
        mesh = trimesh.creation.cylinder(radius=0.35, height=0.7, sections=48)
    elif name == "torus":
        mesh = trimesh.creation.torus(
            major_radius=0.36, minor_radius=0.17, major_sections=48, minor_sections=16
        )
    else:
        raise ValueError(f"unknown shape '{name}' (known: {', '.join(SHAPES)})")
    mesh = trimesh.graph.smooth_shade(mesh, angle=math.radians(40))
    return Mesh(
        torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
        torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64),
    )


class _SolidShape(torch.nn.Module):
    """The geometry interface ``nvdiff-rasterizer`` needs, for a fixed mesh of one albedo."""

    def __init__(self) -> None:
        super().__init__()
        self.mesh: Optional[Mesh] = None
        self.albedo = torch.zeros(3)

    def isosurface(self) -> Mesh:
        return self.mesh

    def forward(self, points: Float[Tensor, "*N 3"], output_normal: bool = False):
        return {"features": self.albedo.to(points).expand(*points.shape[:-1], 3)}


class ShapeRenderer:
    """Renders objects of the bundled world with the project's renderer and material."""

    def __init__(
        self,
        height: int = 32,
        width: int = 32,
        camera_config: Optional[dict] = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        cfg = dict(CAMERA_CONFIG, **(camera_config or {}))
        cfg.update(height=height, width=width, batch_size=1)
        self.camera_cfg = parse_structured(RandomCameraDataModuleConfig, cfg)
        self.cameras = RandomCameraIterableDataset(self.camera_cfg)
        self.cameras.base_seed = seed
        self.geometry = _SolidShape()
        self.material = threestudio.find("diffuse-with-point-light-material")(
            dict(SHADING, albedo_activation="none", ambient_only_steps=0)
        ).eval()
        self.background = threestudio.find("solid-color-background")(
            {"color": list(BACKGROUND_COLOR), "learned": False}
        ).eval()
        self.renderer = threestudio.find("nvdiff-rasterizer")(
            {"context_type": "cuda"},
            geometry=self.geometry,
            material=self.material,
            background=self.background,
        ).eval()
        self.directions = make_directions(False, 45.0, 45.0, 60.0)
        self._meshes = {name: shape_mesh(name) for name in SHAPES}

    def camera_batch(self, index: int, batch_size: int) -> Dict[str, Tensor]:
        """Batch ``index`` of the camera stream (a function of the seed and index alone)."""
        self.cameras.batch_sizes = [batch_size]  # collate re-reads it for the step
        self.cameras.set_step(index)
        return self.cameras.collate(None)

    def direction_index(
        self, elevation: Float[Tensor, "B"], azimuth: Float[Tensor, "B"]
    ) -> Integer[Tensor, "B"]:
        """Which of ``DIRECTIONS`` the prompt processor would pick for each camera."""
        return direction_indices(self.directions, elevation, azimuth, torch.ones_like(elevation))

    @torch.no_grad()
    def render(
        self,
        shape: str,
        albedo: Tuple[float, float, float],
        batch: Dict[str, Tensor],
        scale: float = 1.0,
    ) -> Float[Tensor, "B H W 3"]:
        mesh = self._meshes[shape]
        self.geometry.mesh = Mesh(
            mesh.v_pos.to(self.device) * scale, mesh.t_pos_idx.to(self.device)
        )
        self.geometry.albedo = torch.as_tensor(albedo, dtype=torch.float32)
        out = self.renderer(
            mvp_mtx=batch["mvp_mtx"].to(self.device),
            camera_positions=batch["camera_positions"].to(self.device),
            light_positions=batch["light_positions"].to(self.device),
            height=batch["height"],
            width=batch["width"],
        )
        return out["comp_rgb"].clamp(0.0, 1.0)


@dataclass
class ShapeDataset:
    """Rendered images with their labels; ``images`` are uint8 [N, H, W, 3]."""

    images: Integer[Tensor, "N H W 3"]
    shape_idx: Integer[Tensor, "N"]
    color_idx: Integer[Tensor, "N"]
    direction_idx: Integer[Tensor, "N"]
    # the cameras (degrees, scene units) and which views share one object instance (one scale
    # and albedo): the novel-view model trains on pairs of a group
    elevation: Optional[Float[Tensor, "N"]] = None
    azimuth: Optional[Float[Tensor, "N"]] = None
    camera_distance: Optional[Float[Tensor, "N"]] = None
    group_idx: Optional[Integer[Tensor, "N"]] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def prompts(self) -> List[str]:
        colors = list(COLORS)
        return [
            prompt_of(colors[c], SHAPES[s])
            for c, s in zip(self.color_idx.tolist(), self.shape_idx.tolist())
        ]

    def save(self, path: str) -> None:
        torch.save(self.__dict__, path)

    @classmethod
    def load(cls, path: str) -> "ShapeDataset":
        return cls(**torch.load(path, weights_only=True))


def render_shape_dataset(
    n_per_object: int,
    height: int = 32,
    width: int = 32,
    seed: int = 0,
    batch_size: int = 16,
    scale_range: Tuple[float, float] = (0.85, 1.15),
    color_jitter: float = 0.04,
    camera_config: Optional[dict] = None,
    device: str = "cpu",
    progress: bool = True,
) -> ShapeDataset:
    """``n_per_object`` random views of each of the 30 objects. Every batch of ``batch_size``
    views shares one scale and one jittered albedo; ``seed`` fixes cameras, lights and jitter."""
    renderer = ShapeRenderer(height, width, camera_config, seed=seed, device=device)
    gen = torch.Generator().manual_seed(seed)
    images, shapes, colors, directions, cameras, groups = [], [], [], [], [], []
    n_batches = math.ceil(n_per_object / batch_size)
    objects = [(ci, si) for ci in range(len(COLORS)) for si in range(len(SHAPES))]
    color_values = list(COLORS.values())
    bar = tqdm(total=len(objects) * n_batches, desc="rendering shapes", disable=not progress)
    stream = 0
    for ci, si in objects:
        for b in range(n_batches):
            n = min(batch_size, n_per_object - b * batch_size)
            batch = renderer.camera_batch(stream, n)
            stream += 1
            lo, hi = scale_range
            scale = lo + (hi - lo) * torch.rand(1, generator=gen).item()
            jitter = (torch.rand(3, generator=gen) * 2 - 1) * color_jitter
            albedo = (torch.as_tensor(color_values[ci]) + jitter).clamp(0.0, 1.0)
            rgb = renderer.render(SHAPES[si], tuple(albedo.tolist()), batch, scale)
            images.append((rgb * 255).round().to(torch.uint8).cpu())
            shapes.append(torch.full((n,), si))
            colors.append(torch.full((n,), ci))
            directions.append(renderer.direction_index(batch["elevation"], batch["azimuth"]))
            cameras.append(
                torch.stack([batch["elevation"], batch["azimuth"], batch["camera_distances"]], -1)
            )
            groups.append(torch.full((n,), stream - 1))
            bar.update()
    bar.close()
    cameras = torch.cat(cameras).float()
    return ShapeDataset(
        torch.cat(images),
        torch.cat(shapes),
        torch.cat(colors),
        torch.cat(directions),
        elevation=cameras[:, 0],
        azimuth=cameras[:, 1],
        camera_distance=cameras[:, 2],
        group_idx=torch.cat(groups),
    )
