"""Multi-view images of an analytic scene, ray-traced on the fly: a reconstruction target that
needs no download. The scene is a few coloured spheres lit by a fixed directional light on a
solid background; cameras are drawn like the random-camera datamodule's."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import threestudio
from threestudio.data.uncond import (
    RandomCameraDataModule,
    RandomCameraDataModuleConfig,
    RandomCameraDataset,
    RandomCameraIterableDataset,
)
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Dict, Float, List, Tensor, Tuple


@dataclass
class SyntheticSceneDataModuleConfig(RandomCameraDataModuleConfig):
    # spheres as [x, y, z, radius, r, g, b]
    spheres: List[List[float]] = field(
        default_factory=lambda: [
            [0.0, -0.18, -0.05, 0.3, 0.9, 0.2, 0.15],
            [0.0, 0.28, 0.12, 0.2, 0.15, 0.35, 0.95],
        ]
    )
    # colour of the pixels that miss every sphere
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    light_direction: Tuple[float, float, float] = (1.0, 0.5, 1.0)  # towards the light (world axes)
    ambient: float = 0.35  # shade = ambient + (1 - ambient) * max(0, n . l)


def trace_spheres(
    rays_o: Float[Tensor, "... 3"],
    rays_d: Float[Tensor, "... 3"],
    spheres: Float[Tensor, "S 7"],
    background: Float[Tensor, "3"],
    light_direction: Float[Tensor, "3"],
    ambient: float,
) -> Tuple[Float[Tensor, "... 3"], Float[Tensor, "... 1"], Float[Tensor, "... 1"]]:
    """Colour, mask and depth of the nearest sphere hit along each ray (Lambertian shading)."""
    d = F.normalize(rays_d, dim=-1)
    centers, radii, colors = spheres[:, :3], spheres[:, 3], spheres[:, 4:7]
    oc = rays_o[..., None, :] - centers  # [..., S, 3]
    b = (oc * d[..., None, :]).sum(-1)
    c = (oc * oc).sum(-1) - radii**2
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp(min=0))
    hit = (disc > 0) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, float("inf")))
    t_min, idx = t.min(dim=-1)
    any_hit = torch.isfinite(t_min)
    points = rays_o + d * t_min.clamp(max=1e3)[..., None]
    normals = F.normalize(points - centers[idx], dim=-1)
    light = F.normalize(light_direction, dim=0)
    shade = ambient + (1 - ambient) * (normals * light).sum(-1).clamp(min=0)
    rgb = colors[idx] * shade[..., None]
    rgb = torch.where(any_hit[..., None], rgb, background.expand_as(rgb))
    mask = any_hit[..., None].float()
    depth = torch.where(any_hit, t_min, torch.zeros_like(t_min))[..., None]
    return rgb, mask, depth


class _SceneMixin:
    def _scene(self):
        spheres = torch.as_tensor(config_to_primitive(self.cfg.spheres), dtype=torch.float32)
        if spheres.ndim != 2 or spheres.shape[1] != 7:
            raise ConfigError("data.spheres: each sphere is [x, y, z, radius, r, g, b]")
        return (
            spheres,
            torch.as_tensor(config_to_primitive(self.cfg.background_color), dtype=torch.float32),
            torch.as_tensor(config_to_primitive(self.cfg.light_direction), dtype=torch.float32),
        )

    def _add_images(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        spheres, background, light = self._scene()
        rgb, mask, depth = trace_spheres(
            batch["rays_o"], batch["rays_d"], spheres, background, light, self.cfg.ambient
        )
        batch.update({"rgb": rgb, "mask": mask, "ref_depth": depth})
        return batch


class SyntheticSceneIterableDataset(_SceneMixin, RandomCameraIterableDataset):
    def collate(self, batch) -> Dict[str, Any]:
        return self._add_images(super().collate(batch))


class SyntheticSceneEvalDataset(_SceneMixin, RandomCameraDataset):
    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self._add_images(super().__getitem__(index))


@threestudio.register("synthetic-scene-datamodule")
class SyntheticSceneDataModule(RandomCameraDataModule):
    """Random cameras plus the ray-traced ``rgb``/``mask``/``ref_depth`` of the scene."""

    cfg: SyntheticSceneDataModuleConfig
    config_class = SyntheticSceneDataModuleConfig
    train_dataset_class = SyntheticSceneIterableDataset
    eval_dataset_class = SyntheticSceneEvalDataset
